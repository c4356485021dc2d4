"""Tests that kill the mutants mutmut left alive in the numerical core (docs/mutation.md).

Each test names the mutants it kills; expected values come from hand calculations or an
independent NumPy/SciPy computation written here, never from the function under test.
"""
import importlib
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jax_abstain import metrics
from jax_abstain.attacks import common
from jax_abstain.errors import UserError

# The module, not the function of the same name that jax_abstain.attacks exports.
apgd = importlib.import_module("jax_abstain.attacks.apgd")

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


# --- attacks/common.py, attacks/apgd.py: attack losses and the APGD schedule -----------------


def test_dlr_denominator_is_top1_minus_top3():
  # z = [3, 1, 2, 0], y = 1: z_y - max_other = 1 - 3 = -2; sorted 3, 2, 1, 0: pi1 - pi3 = 2.
  # (pi1 - pi2 would give 1 and a loss of 2.) Second row: y on top, 4 - 2 over 4 - 1.
  z = jnp.array([[3.0, 1.0, 2.0, 0.0], [4.0, 2.0, 1.0, -1.0]])
  got = common.dlr(z, jnp.array([1, 0]))
  np.testing.assert_allclose(np.asarray(got), [1.0, -2.0 / 3.0], rtol=1e-6)


def test_targeted_dlr_denominator_averages_pi3_and_pi4():
  # z = [3, 1, 2, 0, -1], y = 0, t = 2: -(3 - 2) / (3 - (1 + 0) / 2) = -0.4.
  z = jnp.array([[3.0, 1.0, 2.0, 0.0, -1.0]])
  got = common.dlr_targeted(z, jnp.array([0]), jnp.array([2]))
  np.testing.assert_allclose(np.asarray(got), [-0.4], rtol=1e-6)


def test_conf_and_ce_losses_by_hand():
  z = [2.0, 0.0, 1.0]
  lse = math.log(sum(math.exp(v) for v in z))
  # conf: the best class other than y = 0 is class 2; the loss is log softmax(z)_2.
  np.testing.assert_allclose(np.asarray(common.conf(jnp.array([z]), jnp.array([0]))),
                             [1.0 - lse], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(common.ce(jnp.array([z]), jnp.array([1]))),
                             [lse - 0.0], rtol=1e-6)


@pytest.mark.parametrize("n_iter, at, windows", [
    # AutoAttack's APGD: first check after int(0.22 n) steps, windows shrinking by
    # int(0.03 n) (>= 1) down to int(0.06 n) (>= 1); counted by hand.
    (100, [21, 40, 56, 69, 79, 86, 92, 98], [22, 19, 16, 13, 10, 7, 6, 6]),
    (40, [7, 14, 20, 25, 29, 32, 34, 36, 38], [8, 7, 6, 5, 4, 3, 2, 2, 2]),
    (4, [0, 1, 2, 3], [1, 1, 1, 1]),
])
def test_apgd_checkpoints_by_hand(n_iter, at, windows):
  is_checkpoint, window = apgd.checkpoint_schedule(n_iter)
  np.testing.assert_array_equal(np.flatnonzero(is_checkpoint), at)
  np.testing.assert_array_equal(window[is_checkpoint], windows)


def test_apgd_momentum_step_by_hand():
  x = jnp.array([[0.5, 0.5]])
  # Linf: z = x_adv + 0.1 sign(g) = (0.65, 0.45); x_new = x_adv + 0.75 (z - x_adv)
  # + 0.25 (x_adv - x_prev) = (0.55 + 0.075 + 0.0125, 0.55 - 0.075 + 0.0125).
  got = apgd._step(jnp.array([[0.55, 0.55]]), jnp.array([[0.5, 0.5]]), jnp.array([[2.0, -3.0]]),
                   x, 0.3, jnp.array([[0.1]]), 0.75, "linf")
  np.testing.assert_allclose(np.asarray(got), [[0.6375, 0.4875]], rtol=1e-6)
  # L2: direction g / ||g|| = (0.6, 0.8), step 0.5: z = (0.8, 0.9) (inside the ball of 1);
  # x_new = x + 0.75 (0.3, 0.4) + 0.25 (0.05, 0) = (0.7375, 0.8).
  got = apgd._step(x, jnp.array([[0.45, 0.5]]), jnp.array([[3.0, 4.0]]), x, 1.0,
                   jnp.array([[0.5]]), 0.75, "l2")
  np.testing.assert_allclose(np.asarray(got), [[0.7375, 0.8]], rtol=1e-6)
