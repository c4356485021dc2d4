"""Sanity checks before an evaluation, in the spirit of AutoAttack's ``checks.py``.

    checks.run_all(logits_fn, x, y)                     # warns (UserWarning), never raises

Each check looks for a way in which a robustness number can be silently wrong: a model that
returns probabilities (DLR and margin losses assume logits; softmax saturation flattens CE
gradients), inputs whose gradient is exactly zero (masked or non-differentiable models, where
gradient attacks report false robustness), a model whose outputs change from call to call
(randomized defences need ``version="rand"`` and EOT), too few classes for the DLR losses or
more target classes than there are other classes (AutoAttack's ``check_n_classes``), and
(after the run) a gradient-free attack that still finds many points the gradient attacks missed.
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jax_abstain import validation
from jax_abstain.attacks import common


def _warn(message: str):
  warnings.warn(message, UserWarning, stacklevel=3)


def check_probabilities(logits: jax.Array) -> bool:
  """Warns if every output row is in [0, 1] and sums to 1; returns True if it warned."""
  z = np.asarray(logits)
  if z.min() >= 0.0 and z.max() <= 1.0 and np.allclose(z.sum(-1), 1.0, atol=1e-5):
    _warn("logits_fn seems to return probabilities (rows in [0, 1] summing to 1); attacks "
          "expect logits, and the DLR/margin losses and CE gradients degrade on probabilities")
    return True
  return False


def check_zero_gradients(logits_fn, x: jax.Array, y: jax.Array) -> bool:
  """Warns if the CE input gradient is exactly zero for some samples; returns True if so."""
  logits_fn = validation.inference_model(logits_fn, x, name="checks: model")[0]
  _, _, grad = common.loss_and_grad(logits_fn, common.ce, x, y)
  zero = np.asarray(common.l2_norm(grad) == 0)
  if zero.any():
    _warn(f"the input gradient is zero for {zero.sum()} of {zero.size} samples: gradient-based "
          "attacks cannot move them, robustness may be overestimated (gradient masking?); "
          "rely on the gradient-free Square attack for those")
    return True
  return False


def check_randomized(logits_fn, x: jax.Array, *, key=None, randomized: bool = False) -> bool:
  """Compares two evaluations; warns if a deterministic model varies or a randomized one not.

  With ``randomized=True`` logits_fn is ``(x, keys [B]) -> logits`` and the two evaluations use
  different keys. Returns True if it warned. An NNX module is checked as an eval-mode copy.
  """
  logits_fn = validation.eval_copy(logits_fn)
  if randomized:
    keys = common.example_keys(jax.random.key(0) if key is None else key, x.shape[0])
    fold = lambda i: jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
    a, b = np.asarray(logits_fn(x, fold(1))), np.asarray(logits_fn(x, fold(2)))
    if np.array_equal(a, b):
      _warn("version='rand' but the model gives identical outputs for different keys; EOT "
            "only costs time here, use version='standard'")
      return True
    return False
  a, b = np.asarray(logits_fn(x)), np.asarray(logits_fn(x))
  if not np.allclose(a, b, rtol=1e-5, atol=1e-6):
    _warn("the model's outputs differ between two calls on the same input: it looks randomized "
          "(dropout or BN in training mode?); use eval mode, or version='rand' with EOT")
    return True
  return False


def check_n_classes(n_classes: int, attacks_to_run, n_target_classes: int = 9) -> bool:
  """Warns, as AutoAttack's ``check_n_classes`` does, when a DLR-based attack has too few
  classes to be defined (APGD-DLR 3, APGD-T 4) or a targeted attack is asked for more targets
  than the ``n_classes - 1`` other classes (all of them are then targeted); returns True if it
  warned."""
  need = {"apgd-dlr": 3, "apgd-t": 4}
  bad = [a for a in attacks_to_run if a in need and n_classes < need[a]]
  targeted = [a for a in attacks_to_run if a in ("apgd-t", "fab-t") and a not in bad]
  if bad:
    _warn(f"{', '.join(bad)} need(s) more than the model's {n_classes} classes and will be "
          "skipped")
  if targeted and n_target_classes > n_classes - 1:
    _warn(f"{', '.join(targeted)}: {n_target_classes} target classes asked for, the model has "
          f"{n_classes - 1} other classes; all {n_classes - 1} are targeted")
  return bool(bad) or (bool(targeted) and n_target_classes > n_classes - 1)


def check_square_success(robust_after: dict, alpha: float = 0.002) -> bool:
  """Warns if Square (gradient-free, run last) still lowered robust accuracy by more than
  ``alpha``: the gradient attacks before it were then probably misled (gradient masking).

  Args:
    robust_after: attack name -> robust accuracy (fraction) after that attack, in run order.
  """
  if "square" not in robust_after or len(robust_after) < 2:
    return False
  before = min(v for k, v in robust_after.items() if k != "square")
  if robust_after["square"] < before - alpha:
    _warn(f"Square lowered the robust accuracy by {before - robust_after['square']:.2%} after "
          "the gradient attacks: the evaluation may be unreliable (gradient masking?); consider "
          "more Square queries and restarts or an adaptive attack")
    return True
  return False


def run_all(logits_fn, x, y, *, attacks_to_run=(), randomized: bool = False, key=None,
            n_samples: int = 16, n_target_classes: int = 9) -> list[str]:
  """Runs every check on the first ``n_samples`` samples; returns the names of those that warned.

  An NNX module is checked as the attacks run it, an eval-mode copy (`common.take_model`).
  """
  x, y = jnp.asarray(x[:n_samples]), jnp.asarray(y[:n_samples])
  warned = []
  keys = None
  if randomized:
    keys = common.example_keys(jax.random.key(0) if key is None else key, x.shape[0])
  logits_fn, logits, _ = common.take_model(logits_fn, x, y, name="checks", keys=keys,
                                           randomized=randomized)
  if randomized:
    logits = logits_fn(x, keys) if logits is None else logits
    fn = lambda z: logits_fn(z, keys)
  else:
    logits = logits_fn(x) if logits is None else logits
    fn = logits_fn
  if check_probabilities(logits):
    warned.append("probabilities")
  if check_zero_gradients(fn, x, y):
    warned.append("zero_gradients")
  if check_randomized(logits_fn, x, key=key, randomized=randomized):
    warned.append("randomized")
  if check_n_classes(logits.shape[-1], attacks_to_run, n_target_classes):
    warned.append("n_classes")
  return warned
