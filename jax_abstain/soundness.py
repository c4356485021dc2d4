"""Soundness guards: re-check what attacks and certificates claim, never take their word.

    robust = soundness.check_attack_result(f, x, x_adv, y, eps=eps, norm="linf")   # [B] bool
    pred, radius = soundness.check_certificates(*smoothing.certify(f, x, key=k, sigma=0.25))

An attack's point must lie in its eps-ball and in [0, 1], and robustness is re-read from the
model at that point (a point claimed non-robust whose prediction does not change is robust). A
certificate never carries a radius for an abstention. A violation is a bug in an attack or a
certifier, not bad input: it raises `SoundnessError`, which the CLIs show with its traceback.
"""
import warnings

import jax.numpy as jnp
import numpy as np

from jax_abstain import validation
from jax_abstain.errors import SoundnessError, UserError

# Slack for float32 rounding of x + delta (about 1 ulp of values in [0, 1]).
BALL_RTOL, BALL_ATOL = 1e-4, 1e-6


def _norm_of(delta: np.ndarray, norm: str) -> np.ndarray:
  flat = delta.reshape(delta.shape[0], -1).astype(np.float64)
  if norm == "linf":
    return np.abs(flat).max(-1, initial=0.0)
  if norm == "l1":
    return np.abs(flat).sum(-1)
  return np.sqrt((flat ** 2).sum(-1))


def check_attack_result(logits_fn, x, x_adv, y, *, eps, norm: str, claimed_robust=None,
                        name: str = "attack") -> np.ndarray:
  """Re-checks an attack's output and returns the robustness the model itself shows there.

  Checks that every x_adv lies in its eps-ball around x (norm `norm`, float32 slack
  `BALL_RTOL`/`BALL_ATOL`) and in [0, 1]; a violation raises `SoundnessError`. Robustness is
  then re-read, ``argmax logits_fn(x_adv) == y``, never taken on the attack's word. If
  `claimed_robust` is given and the attack called a point non-robust whose prediction does not
  change (or the reverse), the re-read value wins and a warning counts the disagreements.

  Args:
    logits_fn: [B, ...] -> logits [B, C], the model the attack ran on (an NNX module runs as
      its eval-mode copy, `validation.eval_copy`, and is never changed).
    x, x_adv: [B, ...] clean and adversarial inputs.
    y: [B] labels the attack tried to flip (the clean predictions for label-free robustness).
    eps: scalar or [B] radii; norm: ``"linf"``, ``"l2"`` or ``"l1"``.
    claimed_robust: optional [B] bool, the attack's own robustness flags.

  Returns:
    [B] bool numpy array, True where the model still predicts y at x_adv.
  """
  x, x_adv = np.asarray(x), np.asarray(x_adv)
  if x.shape != x_adv.shape:
    raise SoundnessError(f"{name}: returned shape {x_adv.shape} for inputs of shape {x.shape}")
  eps_b = np.broadcast_to(np.asarray(eps, np.float64), (x.shape[0],))
  dist = _norm_of(x_adv.astype(np.float64) - x.astype(np.float64), norm)
  outside = dist > eps_b * (1 + BALL_RTOL) + BALL_ATOL
  if outside.any():
    i = int(np.flatnonzero(outside)[0])
    raise SoundnessError(f"{name}: returned a point outside the {norm} ball: sample {i} at "
                         f"distance {dist[i]:.6g} > eps {eps_b[i]:.6g}")
  if not np.all(np.isfinite(x_adv)) or (x_adv.size and (x_adv.min() < 0 or x_adv.max() > 1)):
    raise SoundnessError(f"{name}: returned a point outside [0, 1] (range "
                         f"[{np.nanmin(x_adv):.6g}, {np.nanmax(x_adv):.6g}])")
  logits_fn = validation.eval_copy(logits_fn)   # an NNX module: never changed, eval mode
  robust = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x_adv)), -1)) == np.asarray(y)
  if claimed_robust is not None:
    claimed = np.asarray(claimed_robust, bool)
    false_breaks = int(np.sum(~claimed & robust))
    missed = int(np.sum(claimed & ~robust))
    if false_breaks or missed:
      warnings.warn(f"{name}: {false_breaks} point(s) claimed non-robust keep their prediction "
                    f"and {missed} claimed robust do not; using the model's predictions at x_adv",
                    UserWarning, stacklevel=2)
  return robust


def check_certificates(cert_pred, radius, name: str = "certificate", *, user_input=False):
  """Soundness of certified results: radius finite and >= 0, and 0 for every abstention.

  Args:
    cert_pred: [N] int, -1 = abstain; radius: [N] L2 radii.
    name: what is checked, for the message.
    user_input: the values come from a file the user gave (a report), so a violation is a
      `UserError` (a corrupt or hand-edited file); otherwise it is a `SoundnessError` (a bug).

  Returns:
    (cert_pred [N] int64, radius [N] float64) as numpy arrays.
  """
  error = UserError if user_input else SoundnessError
  cert_pred, radius = np.asarray(cert_pred, np.int64), np.asarray(radius, np.float64)
  if cert_pred.shape != radius.shape or cert_pred.ndim != 1:
    raise error(f"{name}: cert_pred {cert_pred.shape} and radius {radius.shape} differ")
  if np.any(cert_pred < -1):
    raise error(f"{name}: cert_pred below -1 (-1 is the abstention)")
  if not np.all(np.isfinite(radius)) or np.any(radius < 0):
    raise error(f"{name}: radius must be finite and >= 0")
  if np.any(radius[cert_pred == -1] != 0):
    raise error(f"{name}: a radius is reported for an abstention (cert_pred -1); expected 0")
  return cert_pred, radius
