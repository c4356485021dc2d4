"""Accuracy and robustness metrics on per-sample indicator arrays (paper sections 3, 5, A.11).

    m = metrics.summary(is_acc, is_rob)      # percent: nat_acc, rob_acc, rob_inacc, splits
    splits = metrics.four_splits(is_acc, is_rob)
    idx = metrics.pareto_front(xs, ys, maximize=(False, True))   # e.g. Fig. 2

Inputs are [N] arrays of 0/1 (or bool) over the evaluated set; results are percentages of N
(floats in [0, 100]). Robustness is label-free: ``is_rob[i] = 1{F(x') = F(x) for the attack's
x'}``, ``is_acc[i] = 1{F(x_i) = y_i}``.
"""
import numpy as np

from jax_abstain.errors import UserError


def _as_bool(name, a, n=None):
  a = np.asarray(a)
  if a.ndim != 1:
    raise UserError(f"{name}: expected a 1-D array of per-sample indicators, got shape {a.shape}")
  if n is not None and a.shape[0] != n:
    raise UserError(f"{name}: expected {n} samples, got {a.shape[0]}")
  if a.dtype != bool and not np.isin(a, (0, 1)).all():
    raise UserError(f"{name}: indicators must be 0/1 or bool")
  return a.astype(bool)


def _percent(mask) -> float:
  return float(100.0 * np.mean(mask)) if mask.size else 0.0


def natural_accuracy(is_acc) -> float:
  """R_nat = 100 * mean(F(x) = y)."""
  return _percent(_as_bool("is_acc", is_acc))


def robust_accuracy(is_acc, is_rob) -> float:
  """R_rob^acc (eq. 1) = 100 * mean(accurate and robust)."""
  a = _as_bool("is_acc", is_acc)
  return _percent(a & _as_bool("is_rob", is_rob, a.size))


def robust_inaccuracy(is_acc, is_rob) -> float:
  """R_rob^not-acc (eq. 2) = 100 * mean(inaccurate and robust)."""
  a = _as_bool("is_acc", is_acc)
  return _percent(~a & _as_bool("is_rob", is_rob, a.size))


def robust_selection(selector_is_rob) -> float:
  """R_rob^sel of a robustness-indicator selector = 100 * mean(S robust); pass is_rob at 2 eps
  for the sound guarantee at eps (section 5, A.3)."""
  return _percent(_as_bool("selector", selector_is_rob))


def commit_precision(is_acc, is_rob, selected) -> float:
  """Abstain-model robust accuracy: 100 * mean(selected & robust & accurate) / mean(selected),
  0 when nothing is selected (Fig. 3 / Table 2b)."""
  a = _as_bool("is_acc", is_acc)
  r = _as_bool("is_rob", is_rob, a.size)
  s = _as_bool("selected", selected, a.size)
  return float(100.0 * np.sum(s & r & a) / np.sum(s)) if s.any() else 0.0


def four_splits(is_acc, is_rob) -> dict:
  """The robustness/accuracy splits of appendix A.11 (percent; they sum to 100)."""
  a = _as_bool("is_acc", is_acc)
  r = _as_bool("is_rob", is_rob, a.size)
  return {"rob_acc": _percent(r & a), "rob_inacc": _percent(r & ~a),
          "nonrob_acc": _percent(~r & a), "nonrob_inacc": _percent(~r & ~a)}


def summary(is_acc, is_rob) -> dict:
  """nat_acc, rob_acc, rob_inacc and the four splits, in percent of the evaluated set."""
  splits = four_splits(is_acc, is_rob)
  return {"nat_acc": natural_accuracy(is_acc), "rob_acc": splits["rob_acc"],
          "rob_inacc": splits["rob_inacc"], "splits": splits}


def pareto_front(xs, ys, maximize=(True, True)) -> np.ndarray:
  """Indices of the non-dominated points, sorted by x (Pareto fronts of Fig. 2-4).

  Args:
    xs, ys: [P] coordinates.
    maximize: per axis, whether larger is better (Fig. 2 minimises robust inaccuracy on x).

  Returns:
    [F] int indices into xs/ys; a point is dropped if another is at least as good on both
    axes and strictly better on one. Duplicates keep their first index.
  """
  xs, ys = np.asarray(xs, float), np.asarray(ys, float)
  if xs.shape != ys.shape or xs.ndim != 1:
    raise UserError(f"pareto_front: expected two 1-D arrays of one length, got {xs.shape} and "
                    f"{ys.shape}")
  sx = xs if maximize[0] else -xs
  sy = ys if maximize[1] else -ys
  keep = []
  for i in range(len(xs)):
    better_eq = (sx >= sx[i]) & (sy >= sy[i])
    strictly = (sx > sx[i]) | (sy > sy[i])
    dup_before = (sx == sx[i]) & (sy == sy[i]) & (np.arange(len(xs)) < i)
    if not np.any(better_eq & strictly) and not dup_before.any():
      keep.append(i)
  return np.asarray(sorted(keep, key=lambda i: (xs[i], ys[i])), int)
