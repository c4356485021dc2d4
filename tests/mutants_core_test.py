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
  # Three classes are enough for DLR (AutoAttack's rule): z = [2, 0, 1], y = 1: -(0 - 2) / 2.
  np.testing.assert_allclose(np.asarray(common.dlr(jnp.array([[2.0, 0.0, 1.0]]), jnp.array([1]))),
                             [1.0], rtol=1e-6)


def test_targeted_dlr_denominator_averages_pi3_and_pi4():
  # z = [3, 1, 2, 0, -1], y = 0, t = 2: -(3 - 2) / (3 - (1 + 0) / 2) = -0.4.
  z = jnp.array([[3.0, 1.0, 2.0, 0.0, -1.0]])
  got = common.dlr_targeted(z, jnp.array([0]), jnp.array([2]))
  np.testing.assert_allclose(np.asarray(got), [-0.4], rtol=1e-6)
  # Four classes are enough for targeted DLR: z = [3, 1, 2, 0] gives the same -0.4.
  got = common.dlr_targeted(jnp.array([[3.0, 1.0, 2.0, 0.0]]), jnp.array([0]), jnp.array([2]))
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
  # A gradient shorter than 1 is normalised too: g = (0.3, 0.4) gives the same direction.
  got = apgd._step(x, x, jnp.array([[0.3, 0.4]]), x, 1.0, jnp.array([[0.5]]), 0.75, "l2")
  np.testing.assert_allclose(np.asarray(got), [[0.725, 0.8]], rtol=1e-6)


# --- losses.py: every loss on a batch of rows that differ, against NumPy written here ---------
# The hand-computed tests of tests/losses_test.py use one row, where an axis or index mutant
# (softmax over the whole batch, a gather along the batch axis) cannot show.

def _np_log_softmax(z):
  z = np.asarray(z, float)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _np_best_other(z, excluded):
  z = np.array(z, float)
  z[np.arange(len(z)), excluded] = -np.inf
  return z.argmax(-1)


RNG = np.random.default_rng(17)
NAT3 = RNG.normal(size=(3, 4)) * 2.0
ADV3 = RNG.normal(size=(3, 4)) * 2.0
Y3 = np.array([2, 0, 3])


def _np_kl(p_logits, q_logits):
  lp, lq = _np_log_softmax(p_logits), _np_log_softmax(q_logits)
  return (np.exp(lp) * (lp - lq)).sum(-1)


def _np_ce(z, y):
  return -_np_log_softmax(z)[np.arange(len(z)), y]


def test_mart_on_a_batch():
  from jax_abstain import losses
  p_adv = np.exp(_np_log_softmax(ADV3))
  other = _np_best_other(ADV3, Y3)
  bce = _np_ce(ADV3, Y3) - np.log(1.0 - p_adv[np.arange(3), other])
  p_y = np.exp(_np_log_softmax(NAT3))[np.arange(3), Y3]
  want = bce + 6.0 * _np_kl(NAT3, ADV3) * (1.0 - p_y)
  got = losses.mart(jnp.asarray(NAT3), jnp.asarray(ADV3), jnp.asarray(Y3))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


ADV3B = RNG.normal(size=(3, 4)) * 2.0          # a second adversarial point (paper's TRADES term)
NOISY = RNG.normal(size=(3, 3, 4)) * 2.0       # K = 3 noisy copies of 3 inputs, 4 classes


def _np_p_y(z, y):
  return np.exp(_np_log_softmax(z))[np.arange(len(z)), y]


def _np_penalty(nat, adv, y, soft=True):
  target = _np_best_other(adv, nat.argmax(-1))
  weight = 1.0 - _np_p_y(nat, y) if soft else (nat.argmax(-1) != y).astype(float)
  return weight * _np_ce(adv, target)


def _call(fn, *arrays, **kwargs):
  return np.asarray(fn(*[jnp.asarray(a) for a in arrays], **kwargs))


def test_cross_entropy_kl_trades_on_a_batch():
  from jax_abstain import losses
  np.testing.assert_allclose(_call(losses.cross_entropy, NAT3, Y3), _np_ce(NAT3, Y3), rtol=1e-5)
  kl = _np_kl(NAT3, ADV3)
  np.testing.assert_allclose(_call(losses.kl_divergence, NAT3, ADV3), kl, rtol=1e-5)
  np.testing.assert_allclose(_call(losses.kl_divergence, NAT3, ADV3, reduction="mean"), kl / 4,
                             rtol=1e-5)
  np.testing.assert_allclose(_call(losses.trades, NAT3, ADV3, Y3, beta=2.5, kl_reduction="mean"),
                             _np_ce(NAT3, Y3) + 2.5 * kl / 4, rtol=1e-5)
  # The TRADES paper's default weight 6 on the summed KL.
  np.testing.assert_allclose(_call(losses.trades, NAT3, ADV3, Y3), _np_ce(NAT3, Y3) + 6.0 * kl,
                             rtol=1e-5)


def test_era_penalty_and_qualifiers_on_a_batch():
  from jax_abstain import losses
  np.testing.assert_allclose(_call(losses.soft_inaccuracy, NAT3, Y3), 1.0 - _np_p_y(NAT3, Y3),
                             rtol=1e-5)
  hard = (NAT3.argmax(-1) != Y3).astype(float)
  np.testing.assert_array_equal(_call(losses.soft_inaccuracy, NAT3, Y3, soft=False), hard)
  for soft in (True, False):
    np.testing.assert_allclose(_call(losses.robust_inaccuracy_penalty, NAT3, ADV3, Y3, soft=soft),
                               _np_penalty(NAT3, ADV3, Y3, soft), rtol=1e-5, atol=1e-7)
  # The paper's variant: TRADES at its own point x'' (ADV3B), the penalty at x' (ADV3).
  want = 0.7 * (_np_ce(NAT3, Y3) + 3.0 * _np_kl(NAT3, ADV3B)) + _np_penalty(NAT3, ADV3, Y3)
  got = losses.era(jnp.asarray(NAT3), jnp.asarray(ADV3), jnp.asarray(Y3), beta=0.7,
                   trades_beta=3.0, trades_adv_logits=jnp.asarray(ADV3B))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_dga_both_variants_on_a_batch():
  from jax_abstain import losses
  rows = np.arange(3)
  target = _np_best_other(ADV3, NAT3.argmax(-1))
  rob = _np_ce(NAT3, Y3) + 3.0 * _np_kl(NAT3, ADV3B)
  p_adv = np.exp(_np_log_softmax(ADV3))[rows, target]
  want = 0.4 * rob - np.log(_np_p_y(NAT3, Y3) + p_adv)
  kwargs = dict(beta=0.4, trades_beta=3.0, trades_adv_logits=jnp.asarray(ADV3B))
  got = losses.dga(jnp.asarray(NAT3), jnp.asarray(ADV3), jnp.asarray(Y3), **kwargs)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
  # The authors' joint (C+1)-way softmax over [f(x), f(x')_{c*}], confidence weight 0.5.
  joint = np.exp(_np_log_softmax(np.concatenate([NAT3, ADV3[rows, target][:, None]], -1)))
  want = 0.4 * rob - np.log(0.5 * joint[rows, Y3] + joint[:, -1])
  got = losses.dga(jnp.asarray(NAT3), jnp.asarray(ADV3), jnp.asarray(Y3), joint_softmax=True,
                   conf=0.5, **kwargs)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def _np_smoothed(noisy, gamma):
  return np.exp(_np_log_softmax(gamma * noisy)).mean(0)


def _np_ppf(p):
  from scipy.stats import norm
  return norm.ppf(np.clip(p, 1e-6, 1 - 1e-6))


def test_noise_radius_and_cra_on_a_batch():
  from jax_abstain import losses
  rows = np.arange(3)
  ce_copies = np.mean([_np_ce(z, Y3) for z in NOISY], 0)
  np.testing.assert_allclose(_call(losses.noise, NOISY, Y3), ce_copies, rtol=1e-5)
  q = _np_smoothed(NOISY, 2.0)
  paper = 0.25 * (_np_ppf(q[rows, Y3]) - _np_ppf(q[rows, _np_best_other(q, Y3)]))
  np.testing.assert_allclose(_call(losses.certified_radius, NOISY, Y3, sigma=0.5, gamma=2.0),
                             paper, rtol=1e-4)
  top = np.sort(q, -1)[:, ::-1]
  code = 0.25 * (_np_ppf(top[:, 0] - 1e-6) - _np_ppf(top[:, 1] + 1e-6))
  np.testing.assert_allclose(
      _call(losses.certified_radius, NOISY, Y3, sigma=0.5, gamma=2.0, top_two=True), code,
      rtol=1e-4)
  p_inacc = 1.0 - np.exp(_np_log_softmax(NOISY)).mean(0)[rows, Y3]
  np.testing.assert_allclose(_call(losses.cra, NOISY, Y3, sigma=0.5, beta=0.6, gamma=2.0),
                             p_inacc * paper + 0.6 * ce_copies, rtol=1e-4)
  np.testing.assert_allclose(
      _call(losses.cra, NOISY, Y3, sigma=0.5, beta=0.6, gamma=2.0, code_variant=True),
      p_inacc * code + 0.6 * _np_ce(NOISY.mean(0), Y3), rtol=1e-4)
  # The paper's defaults: beta 1, Gamma 4.
  q4 = _np_smoothed(NOISY, 4.0)
  paper4 = 0.25 * (_np_ppf(q4[rows, Y3]) - _np_ppf(q4[rows, _np_best_other(q4, Y3)]))
  np.testing.assert_allclose(_call(losses.cra, NOISY, Y3, sigma=0.5),
                             p_inacc * paper4 + ce_copies, rtol=1e-4)


def test_radius_where_the_smoothed_probabilities_saturate():
  from jax_abstain import losses
  # q = (1, 0, 0) in float32: Phi^-1 sees the clamp [1e-6, 1 - 1e-6], so the radius is
  # sigma / 2 * 2 Phi^-1(1 - 1e-6) (float32 resolution near 1 allows ~0.3%).
  noisy = jnp.array([[[60.0, -60.0, 0.0]]] * 4)
  want = 0.25 * (_np_ppf(1 - 1e-6) - _np_ppf(1e-6))
  np.testing.assert_allclose(_call(losses.certified_radius, noisy, np.array([0]), sigma=0.5),
                             [want], rtol=1e-2)


def test_dga_default_trades_weight_is_six():
  from jax_abstain import losses
  want = 1.0 * (_np_ce(NAT3, Y3) + 6.0 * _np_kl(NAT3, ADV3)) - np.log(
      _np_p_y(NAT3, Y3) + np.exp(_np_log_softmax(ADV3))[np.arange(3),
                                                        _np_best_other(ADV3, NAT3.argmax(-1))])
  np.testing.assert_allclose(_call(losses.dga, NAT3, ADV3, Y3, beta=1.0), want, rtol=1e-5)


# --- compose.py ------------------------------------------------------------------------------


def test_compose_indicators_counts_and_the_core_alone():
  from jax_abstain import compose
  acc, rob = [1, 0, 1, 1], [1, 1, 0, 0]
  # One model and no selector: the core answers everything.
  alone = compose.compose_indicators([], [acc], [rob])
  assert alone.summary()["nat_acc"] == 75.0 and alone.summary()["rob_acc"] == 25.0
  # One selector per abstain model: two selectors for two models is refused, as is an
  # accuracy list without its robustness.
  with pytest.raises(UserError, match="^compose: need one selector per abstain model"):
    compose.compose_indicators([[1, 0, 0, 0], [0, 1, 0, 0]], [acc, acc], [rob, rob])
  with pytest.raises(UserError, match="^compose: need one selector per abstain model"):
    compose.compose_indicators([[1, 0, 0, 0]], [acc, acc], [rob])


def test_default_tau_grid_by_hand():
  from jax_abstain import compose
  grid = compose.default_tau_grid()
  assert len(grid) == 20 and grid[0] == 0.0 and grid[-1] == 0.99
  assert grid[1] == round(0.99 / 19, 4) == 0.0521 and grid[10] == round(9.9 / 19, 4)


def test_model_columns_are_boolean_masks():
  from jax_abstain import compose
  cols = {"sample_idx": np.arange(3), "label": np.zeros(3, int), "is_acc": np.array([1, 0, 1]),
          "is_rob@0.1": np.array([0, 1, 1])}
  acc = compose.model_accuracy(cols)
  # ~ of the mask is the set of inaccurate samples (on integers it would give -2, -1, -2).
  assert acc.dtype == bool and list(~acc) == [False, True, False]
  kind, rob = compose.model_robustness(cols, "0.1", certified=True)
  assert kind == compose.NONE and rob.dtype == bool and list(~rob) == [True] * 3


# --- smoothing.py ----------------------------------------------------------------------------


def test_look_schedule_default_first_look_and_its_check():
  from jax_abstain import smoothing
  # Looks at 100, 200, 400, 800 draws, then n (docs/design.md, appendix A5: n0 = 100).
  assert smoothing.look_schedule(1000) == (100, 200, 400, 800, 1000)
  with pytest.raises(UserError, match="^first_look: "):
    smoothing.look_schedule(1000, first=0)
