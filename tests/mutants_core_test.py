"""Tests that kill the mutants mutmut left alive in the numerical core (docs/mutation.md).

Each test names the mutants it kills; expected values come from hand calculations or an
independent NumPy/SciPy computation written here, never from the function under test.
"""
import numpy as np
import pytest

from jax_abstain import metrics
from jax_abstain.errors import UserError

# --- metrics.py ------------------------------------------------------------------------------

# Every indicator argument of every metric, with valid values for the others: a 2-D array in
# that position must be refused naming that argument (kills the mutants that pass None or a
# changed name to `_as_bool`: the one-line error would name the wrong input).
OK = [1, 0, 1]
METRIC_ARGS = [
    (metrics.natural_accuracy, 1, 0, "is_acc"),
    (metrics.robust_accuracy, 2, 0, "is_acc"), (metrics.robust_accuracy, 2, 1, "is_rob"),
    (metrics.robust_inaccuracy, 2, 0, "is_acc"), (metrics.robust_inaccuracy, 2, 1, "is_rob"),
    (metrics.robust_selection, 1, 0, "selector"),
    (metrics.commit_precision, 3, 0, "is_acc"), (metrics.commit_precision, 3, 1, "is_rob"),
    (metrics.commit_precision, 3, 2, "selected"),
    (metrics.four_splits, 2, 0, "is_acc"), (metrics.four_splits, 2, 1, "is_rob"),
]


@pytest.mark.parametrize("fn, nargs, position, name", METRIC_ARGS)
def test_metric_errors_name_the_bad_argument(fn, nargs, position, name):
  args = [OK] * nargs
  args[position] = [OK, OK]
  with pytest.raises(UserError, match=rf"^{name}: expected a 1-D array"):
    fn(*args)
  if position:
    # One indicator per sample: a length-1 array must not broadcast over the 3 samples.
    args[position] = [1]
    with pytest.raises(UserError, match=rf"^{name}: expected 3 samples, got 1"):
      fn(*args)


def test_robust_inaccuracy_by_hand():
  # Inaccurate and robust: samples 1 and 4 of 5 -> 40%; robust accuracy would be 20%.
  acc, rob = [1, 0, 0, 1, 0], [1, 1, 0, 0, 1]
  assert metrics.robust_inaccuracy(acc, rob) == 40.0
  assert metrics.robust_accuracy(acc, rob) == 20.0


def test_percent_of_no_samples_is_zero():
  assert metrics.natural_accuracy([]) == 0.0
  assert metrics.four_splits([], []) == {"rob_acc": 0.0, "rob_inacc": 0.0, "nonrob_acc": 0.0,
                                         "nonrob_inacc": 0.0}


def test_pareto_front_minimising_y_and_empty_input():
  # Minimise y, maximise x: (3, 1) dominates (2, 2) and (1, 3); (4, 5) is kept (best x).
  idx = metrics.pareto_front([1, 2, 3, 4], [3, 2, 1, 5], maximize=(True, False))
  np.testing.assert_array_equal(idx, [2, 3])
  empty = metrics.pareto_front([], [])
  assert empty.dtype.kind == "i" and empty.size == 0       # usable as an index array
