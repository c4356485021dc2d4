"""Selectors S(x) in {0, 1} for abstain models (paper section 5, 7.2).

    s = selectors.robustness_indicator(report, eps="1/255")            # is_rob at 2/255
    s = selectors.certified_indicator(cert_pred, radius, eps=0.25)
    s = selectors.softmax_response(adv_conf, tau=0.9)
    s = selectors.softmax_indicator(report, eps="1/255", tau=0.9)      # adv_conf at 2/255
    s = selectors.select(report, "softmax", eps="1/255", tau=0.9)      # by name
    s = selectors.selection_network(report, eps="0.15", tau=0.5)       # sn_cert@0.15 >= tau

A robustness-indicator selector commits where the model is robust. For the selection itself
to be robust at eps the model must be robust at 2 eps (appendix A.3), so by default the
selector reads ``is_rob@<2 eps>``; ``select_at`` chooses another radius (the authors' code
default is eps itself, which is unsound). The robust softmax response reads the max softmax at
the APGDconf point found in the 2 eps ball (``adv_conf@<2 eps>``, eq. 13 and 17); like the
authors' code it checks the confidence only at that one point (docs/design.md, appendix A3).

A selection network s(x) in [0, 1] (a separate 2-class network's softmax of "select", trained
with IBP to pick the samples its classifier gets right; paper eq. 15, ACE) selects where
s >= tau. Its report columns hold, per radius r, the lowest score over the r-ball: certified
(``sn_cert@<r>``, the interval lower bound, `evaluation.selection`) or found by APGD
(``sn_adv@<r>``). Since s itself is checked over the ball, the sound radius is eps (not 2 eps):
``sn_cert@<eps> >= tau`` proves S_SN(x') = 1 for every x' in the eps-ball.
"""
import numpy as np

from jax_abstain import radii, validation
from jax_abstain.errors import UserError

SELECTORS = ("robustness", "softmax", "softmax-natural", "certified", "sn-certified",
             "sn-empirical")
# Selection-network selectors (paper eq. 15) and the report column prefix of each.
SN_SELECTORS = {"sn-certified": "sn_cert", "sn-empirical": "sn_adv"}
# Selectors with a threshold tau in [0, 1] (the same grid, `compose.default_tau_grid`).
TAU_SELECTORS = ("softmax", "softmax-natural", *SN_SELECTORS)


def rob_column(eps) -> str:
  """Report column of the robustness indicator at radius eps, e.g. ``is_rob@1/255``."""
  return f"is_rob@{radii.format_radius(eps)}"


def conf_column(eps) -> str:
  """Report column of the APGDconf confidence at radius eps, e.g. ``adv_conf@2/255``."""
  return f"adv_conf@{radii.format_radius(eps)}"


def _column(columns: dict, name: str, hint: str):
  """columns[name], or a one-line error listing the report's columns of the same kind."""
  if name not in columns:
    prefix = name.split("@")[0] + "@" if "@" in name else name
    available = sorted(k for k in columns if k.startswith(prefix))
    raise UserError(f"report has no column {name}; available: {', '.join(available) or 'none'}"
                    f" ({hint})")
  return np.asarray(columns[name])


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
  return _column(columns, rob_column(at), f"evaluate the model at radius {at}").astype(bool)


def certified_indicator(cert_pred, radius, eps) -> np.ndarray:
  """S_CRI: certified at radius >= eps (eq. 11); abstentions (pred -1) are never selected."""
  cert_pred, radius = np.asarray(cert_pred), np.asarray(radius, float)
  return (cert_pred >= 0) & (radius >= radii.parse_radius(eps, name="eps"))


def softmax_response(confidence, tau: float) -> np.ndarray:
  """S_SR = 1{max softmax >= tau} (eq. 13); pass the APGDconf confidence for the robust form."""
  tau = validation.check_float(tau, "tau", low=0.0, high=1.0)
  return np.asarray(confidence, float) >= tau


def softmax_indicator(columns: dict, eps, tau: float, *, select_at=None,
                      robust: bool = True) -> np.ndarray:
  """S_SR from a per-sample report.

  Args:
    columns: report columns; needs ``adv_conf@<select_at>`` (robust) or ``conf`` (natural).
    eps: threat-model radius.
    tau: threshold in [0, 1].
    select_at: radius of the APGDconf check; default ``2 * eps`` (sound, section 7.2).
    robust: False selects on the clean confidence ``conf`` (not robust to any attack).

  Returns:
    [N] bool selector.
  """
  if not robust:
    return softmax_response(_column(columns, "conf", "the clean max softmax"), tau)
  at = radii.double_radius(eps) if select_at is None else radii.format_radius(select_at)
  conf = _column(columns, conf_column(at),
                 f"evaluate with APGDconf at radius {at}, e.g. configs/evaluate.py:conf=true")
  return softmax_response(conf, tau)


def sn_column(selector: str, eps) -> str:
  """Report column of a selection-network selector at radius eps, e.g. ``sn_cert@0.15``."""
  return f"{SN_SELECTORS[selector]}@{radii.format_radius(eps)}"


def selection_network(columns: dict, eps, tau: float, *, select_at=None,
                      certified: bool = True) -> np.ndarray:
  """S_SN = 1{s(x') >= tau for the whole ball} (paper eq. 15) from a per-sample report.

  Args:
    columns: report columns; needs ``sn_cert@<r>`` (certified) or ``sn_adv@<r>`` (APGD).
    eps: threat-model radius; the default radius r of the check (s is bounded over the ball
      itself, so eps is sound).
    tau: threshold in [0, 1].
    select_at: another radius r.
    certified: False reads the attacked score (no guarantee against a stronger attack).

  Returns:
    [N] bool selector.
  """
  selector = "sn-certified" if certified else "sn-empirical"
  name = sn_column(selector, eps if select_at is None else select_at)
  return softmax_response(_column(columns, name, "evaluate the selection network, "
                                  "`evaluation.selection.selection_columns`"), tau)


def select(columns: dict, selector: str, eps, *, select_at=None, tau=None) -> np.ndarray:
  """[N] bool selector of one report by name.

  Args:
    columns: report columns.
    selector: ``"robustness"`` (S_ERI), ``"softmax"`` (robust S_SR, APGDconf),
      ``"softmax-natural"`` (S_SR on the clean confidence), ``"certified"`` (S_CRI; the
      report needs ``cert_pred`` and ``radius``; default radius eps), ``"sn-certified"`` or
      ``"sn-empirical"`` (S_SN, default radius eps).
    eps: threat-model radius.
    select_at: radius of the check (default 2 eps; eps for ``certified``).
    tau: threshold, required by the softmax and selection-network selectors.
  """
  if selector not in SELECTORS:
    raise UserError(f"selector: expected one of {', '.join(SELECTORS)}, got {selector!r}")
  if selector in TAU_SELECTORS and tau is None:
    raise UserError(f"selector {selector}: give a threshold tau in [0, 1]")
  if selector == "robustness":
    return robustness_indicator(columns, eps, select_at=select_at)
  if selector == "softmax":
    return softmax_indicator(columns, eps, tau, select_at=select_at)
  if selector == "softmax-natural":
    return softmax_indicator(columns, eps, tau, robust=False)
  if selector in SN_SELECTORS:
    return selection_network(columns, eps, tau, select_at=select_at,
                             certified=selector == "sn-certified")
  for name in ("cert_pred", "radius"):
    _column(columns, name, "certify the model, e.g. with configs/evaluate_certified.py")
  return certified_indicator(columns["cert_pred"], columns["radius"],
                             eps if select_at is None else select_at)
