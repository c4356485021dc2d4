"""Selectors S(x) in {0, 1} for abstain models (paper section 5, 7.2).

    s = selectors.robustness_indicator(report, eps="1/255")            # is_rob at 2/255
    s = selectors.certified_indicator(cert_pred, radius, eps=0.25)
    s = selectors.softmax_response(adv_conf, tau=0.9)

A robustness-indicator selector commits where the model is robust. For the selection itself
to be robust at eps the model must be robust at 2 eps (appendix A.3), so by default the
selector reads ``is_rob@<2 eps>``; ``select_at`` chooses another radius (the authors' code
default is eps itself, which is unsound).
"""
import numpy as np

from jax_abstain import radii
from jax_abstain.errors import UserError


def rob_column(eps) -> str:
  """Report column of the robustness indicator at radius eps, e.g. ``is_rob@1/255``."""
  return f"is_rob@{radii.format_radius(eps)}"


def robustness_indicator(columns: dict, eps, *, select_at=None) -> np.ndarray:
  """S_ERI from a per-sample report (eq. 10 / 14).

  Args:
    columns: report columns (name -> [N] array), e.g. from `reports.read_report`.
    eps: threat-model radius.
    select_at: radius at which robustness is checked; default ``2 * eps`` (sound).

  Returns:
    [N] bool selector.
  """
  at = radii.double_radius(eps) if select_at is None else radii.format_radius(select_at)
  name = rob_column(at)
  if name not in columns:
    available = sorted(k for k in columns if k.startswith("is_rob@"))
    raise UserError(f"report has no column {name}; available: {', '.join(available) or 'none'}"
                    f" (evaluate the model at radius {at})")
  return np.asarray(columns[name]).astype(bool)


def certified_indicator(cert_pred, radius, eps) -> np.ndarray:
  """S_CRI: certified at radius >= eps (eq. 11); abstentions (pred -1) are never selected."""
  cert_pred, radius = np.asarray(cert_pred), np.asarray(radius, float)
  return (cert_pred >= 0) & (radius >= radii.parse_radius(eps, name="eps"))


def softmax_response(confidence, tau: float) -> np.ndarray:
  """S_SR = 1{max softmax >= tau} (eq. 13); pass the APGDconf confidence for the robust form."""
  if not 0.0 <= float(tau) <= 1.0:
    raise UserError(f"tau: expected a threshold in [0, 1], got {tau!r}")
  return np.asarray(confidence, float) >= float(tau)
