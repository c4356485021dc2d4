"""More tests that kill mutants of the numerical core (docs/mutation.md), continuing
tests/mutants_core_test.py (kept under 400 lines): the survivors of the full run.

Each test names the mutants it kills; expected values come from hand calculations or an
independent NumPy/SciPy computation written here, never from the function under test.
"""
import importlib
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import beta as beta_dist, binomtest, norm

from jax_abstain import compose, losses, smoothing
from jax_abstain.attacks import common
from jax_abstain.errors import UserError

# The module, not the function of the same name that jax_abstain.attacks exports.
apgd = importlib.import_module("jax_abstain.attacks.apgd")
RNG = np.random.default_rng(170)

# --- attacks/common.py: the DLR losses on rows that differ, with six classes ------------------

Z6 = RNG.normal(size=(4, 6)).astype(np.float32) * 2.0
Y6, T6 = np.array([0, 3, 5, 2]), np.array([1, 0, 2, 4])


def _np_sorted_desc(z):
  return -np.sort(-np.asarray(z, float), -1)


def test_dlr_and_targeted_dlr_on_a_batch_of_six_classes():
  # AutoAttack's formulas in NumPy (float64). Six classes: every 2nd sorted logit is not the
  # 3rd (kills dlr 18); several rows: a gather along the batch axis shows (dlr_targeted 27);
  # pi3 +- pi4 and 0.5 * vs 0.5 / differ on random logits (dlr_targeted 45, 47).
  rows, zs = np.arange(4), _np_sorted_desc(Z6)
  other = np.where(np.arange(6)[None] == Y6[:, None], -np.inf, Z6).max(-1)
  want = -(Z6[rows, Y6] - other) / (zs[:, 0] - zs[:, 2] + 1e-12)
  np.testing.assert_allclose(np.asarray(common.dlr(jnp.asarray(Z6), jnp.asarray(Y6))), want,
                             rtol=1e-5)
  want = -(Z6[rows, Y6] - Z6[rows, T6]) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)
  got = common.dlr_targeted(jnp.asarray(Z6), jnp.asarray(Y6), jnp.asarray(T6))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_dlr_denominators_keep_their_plus_1e12_at_a_tie():
  # Three equal top logits: the denominator is the 1e-12 alone, -(0 - 1) / 1e-12 = +1e12
  # (a - 1e-12 flips the sign; kills dlr 46, dlr_targeted 42).
  got = common.dlr(jnp.array([[1.0, 1.0, 1.0, 0.0]]), jnp.array([3]))
  np.testing.assert_allclose(np.asarray(got), [1e12], rtol=1e-5)
  got = common.dlr_targeted(jnp.array([[1.0, 1.0, 1.0, 1.0, 0.0]]), jnp.array([4]),
                            jnp.array([0]))
  np.testing.assert_allclose(np.asarray(got), [1e12], rtol=1e-5)


@pytest.mark.parametrize("fn, classes, message", [
    (lambda z: common.dlr(z, jnp.array([0])), 2, "attack loss dlr: needs >= 3 classes"),
    (lambda z: common.dlr_targeted(z, jnp.array([0]), jnp.array([1])), 3,
     "attack loss dlr-targeted: needs >= 4 classes"),
    (lambda z: losses.certified_radius(z[None], jnp.array([0]), sigma=1.0), 1,
     "certified_radius: needs logits for >= 2 classes"),
    (lambda z: losses.top_other_class(z, jnp.array([0])), 1,
     "the best class other than y: needs logits for >= 2 classes"),
])
def test_too_few_classes_name_the_loss(fn, classes, message):
  # The one-line error names the loss (kills dlr 3, 8, 9; dlr_targeted 3, 8, 9;
  # certified_radius 5, 10, 11; top_other_class 3, 8, which pass another name).
  with pytest.raises(UserError, match=f"^{message}"):
    fn(jnp.zeros((1, classes)))


# --- attacks/apgd.py: one step where the projections act ------------------------------------


def test_apgd_step_projects_onto_the_linf_ball_and_skips_zero_gradients():
  x = jnp.array([[0.5, 0.5]])
  # z = P(x_adv + 0.1 sign(g)) = P(0.65, 0.35) = (0.6, 0.4) in the Linf ball of 0.1 (an L2
  # projection would give 0.5 +- 0.0707: kills _step 8); x_new = x_adv + 0.75 (z - x_adv)
  # = (0.5875, 0.4125), inside the Linf ball, outside the L2 ball (kills _step 41).
  got = apgd._step(jnp.array([[0.55, 0.45]]), jnp.array([[0.55, 0.45]]),
                   jnp.array([[1.0, -1.0]]), x, 0.1, jnp.array([[0.1]]), 0.75, "linf")
  np.testing.assert_allclose(np.asarray(got), [[0.5875, 0.4125]], rtol=1e-6)
  # A zero gradient coordinate stays where it is (sign 0; a division by it would be inf:
  # kills _step 14). Momentum 1: x_new = z = (0.65, 0.55).
  got = apgd._step(jnp.array([[0.55, 0.55]]), jnp.array([[0.55, 0.55]]),
                   jnp.array([[2.0, 0.0]]), x, 0.3, jnp.array([[0.1]]), 1.0, "linf")
  np.testing.assert_allclose(np.asarray(got), [[0.65, 0.55]], rtol=1e-6)


# --- compose.py ------------------------------------------------------------------------------


def test_composition_summary_counts_models_and_rounds_to_two_decimals():
  # num_models 0: M = 1 + max(answered_by) = 2 (kills summary 9); shares 1/3, 2/3 rounded to
  # 2 decimals (kills summary 57, 59, 65).
  comp = compose.Composition(np.array([0, 1, 1]), np.array([True, True, False]),
                             np.array([False, True, True]))
  s = comp.summary()
  assert s["answered_share"] == [33.33, 66.67]
  assert s["nat_acc"] == 66.67 and s["rob_acc"] == 33.33 and s["rob_sel"] == 33.33
  # One model answering everything: one share (kills summary 12, a max starting at 1).
  assert compose.compose_indicators([], [[1, 0]], [[1, 1]]).summary()["answered_share"] == [100.0]
  # No samples: 0% and one (undefined) share per model (kills summary 11, no initial value).
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)      # the mean of no samples
    empty = compose.compose_indicators([[]], [[], []], [[], []]).summary()
  assert empty["nat_acc"] == 0.0 and empty["rob_acc"] == 0.0 and len(empty["answered_share"]) == 2


def test_composition_indicators_are_boolean():
  # Model 0 answers sample 0, the core samples 1 and 2. ~ of a bool mask is its complement;
  # on 0/1 integers it would be -2/-1 (kills compose_indicators 44, 46, 50, 52).
  comp = compose.compose_indicators([[1, 0, 0]], [[1, 0, 0], [0, 1, 0]], [[0, 1, 1], [1, 0, 1]])
  assert comp.is_acc.dtype == bool and comp.is_rob.dtype == bool
  assert list(~comp.is_acc) == [False, False, True] and list(~comp.is_rob) == [True, True, False]


CERT = {"sample_idx": np.arange(4), "label": np.array([0, 1, 1, 0]), "pred": np.zeros(4, int),
        "is_acc": np.ones(4, int), "conf": np.ones(4), "cert_pred": np.array([0, 1, -1, 1]),
        "radius": np.array([0.5, 0.3, 0.0, 0.6])}
CORE = {"sample_idx": np.arange(4), "label": CERT["label"], "pred": CERT["label"],
        "is_acc": np.ones(4, int), "conf": np.ones(4)}


def test_certified_abstain_model_selects_at_the_radius_asked_for():
  # Certified at >= 0.55: sample 3 only (the default, eps = 0.25, would select 0, 1, 3:
  # kills _model_selection 18). The "certified" selector is accepted for a certified report
  # and selects at eps (kills _model_selection 5, 6).
  assert compose.compose_reports([CERT, CORE], 0.25, ["0.55"])["rob_sel"] == 25.0
  assert compose.compose_reports([CERT, CORE], 0.25, selector="certified")["rob_sel"] == 75.0


def test_selection_network_selects_at_eps_by_default():
  # sn-certified reads sn_cert@eps (the score is bounded over the eps-ball itself), not the
  # 2 eps of the robustness selector (kills _model_selection 22: no sn_cert@0.3 column).
  base = {"sample_idx": np.arange(4), "label": np.zeros(4, int), "pred": np.zeros(4, int),
          "conf": np.ones(4)}
  branch = {**base, "is_acc": np.array([1, 1, 0, 1]), "is_rob@0.15": np.array([1, 0, 1, 1]),
            "sn_cert@0.15": np.array([0.9, 0.2, 0.8, 0.1])}
  core = {**base, "is_acc": np.ones(4, int), "is_rob@0.15": np.zeros(4, int)}
  r = compose.compose_reports([branch, core], "0.15", selector="sn-certified", tau=0.5)
  assert r["rob_sel"] == 50.0 and r["select_at"] == ["0.15"] and r["rob_acc"] == 25.0


# --- losses.py ------------------------------------------------------------------------------


def _np_log_softmax(z):
  z = np.asarray(z, float)
  return z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1,
                                                                                          keepdims=True))


def _two_rows():
  """Clean and adversarial logits of two rows (3 classes), their NumPy log-softmaxes, the KL
  of each row and the best class at x' other than F(x) = (0, 1)."""
  nat = np.array([[2.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
  adv = np.array([[1.0, 1.5, 0.0], [0.2, 0.3, 2.0]])
  lp_nat, lp_adv = _np_log_softmax(nat), _np_log_softmax(adv)
  kl = (np.exp(lp_nat) * (lp_nat - lp_adv)).sum(-1)
  return nat, adv, np.array([1, 1]), lp_nat, lp_adv, np.arange(2), kl, np.array([1, 2])


def test_era_passes_the_hard_qualifier_on():
  # soft=False: the penalty weight is 1{F(x) != y} (kills era 28, which drops the argument).
  nat, adv, y, lp_nat, lp_adv, rows, kl, target = _two_rows()
  penalty = (nat.argmax(-1) != y) * -lp_adv[rows, target]
  want = 0.5 * (-lp_nat[rows, y] + 6.0 * kl) + penalty
  got = losses.era(jnp.asarray(nat), jnp.asarray(adv), jnp.asarray(y), beta=0.5, soft=False)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_hard_qualifier_keeps_the_logits_dtype():
  # 1{F(x) != y} in the logits' dtype, float16 here (astype(None) gives float32: kills
  # soft_inaccuracy 20).
  got = losses.soft_inaccuracy(jnp.array([[0.0, 1.0], [1.0, 0.0]], jnp.float16),
                               jnp.array([0, 0]), soft=False)
  assert got.dtype == jnp.float16 and got.tolist() == [1.0, 0.0]


def test_mart_boosted_ce_is_finite_where_the_other_class_saturates():
  # p(x')_1 = 1 in float32: 1 - p is 0 and the clip at 1e-12 gives -log(1e-12) = 27.631
  # (without the clip: inf; kills mart 32, 34). nat = adv: KL = 0; CE(adv, 0) = 100.
  z = jnp.array([[0.0, 100.0, -100.0]])
  got = losses.mart(z, z, jnp.array([0]))
  np.testing.assert_allclose(np.asarray(got), [100.0 - math.log(1e-12)], rtol=1e-5)


def test_code_radius_shifts_the_top_two_by_1e6_inward():
  # Two classes, q = (2e-6, 1 - 2e-6): the authors' radius reads Phi^-1(q1 - 1e-6) -
  # Phi^-1(q2 + 1e-6) = 2 Phi^-1(1 - 3e-6); shifting either the other way lands on the clamp
  # 1e-6 and gives 2.5% more (kills certified_radius 34, 38).
  d = -math.log(2e-6) / 4.0          # softmax(4 (0, d)) = (2e-6, 1 - 2e-6) up to 4e-12
  q2 = 1.0 / (1.0 + math.exp(4.0 * d))
  want = 0.5 * (norm.ppf(1.0 - q2 - 1e-6) - norm.ppf(q2 + 1e-6))
  got = losses.certified_radius(jnp.array([[[0.0, d]]]), jnp.array([1]), sigma=1.0,
                                top_two=True)
  np.testing.assert_allclose(np.asarray(got), [want], rtol=5e-3)


# --- smoothing.py ---------------------------------------------------------------------------


def test_alpha_spending_with_one_two_and_three_looks():
  # One look spends all of alpha; otherwise alpha/2 at the last look and alpha/2 shared
  # (kills alpha_spending 2, 3).
  np.testing.assert_allclose(smoothing.alpha_spending(1, 0.01), [0.01])
  np.testing.assert_allclose(smoothing.alpha_spending(2, 0.01), [0.005, 0.005])
  np.testing.assert_allclose(smoothing.alpha_spending(3, 0.01), [0.0025, 0.0025, 0.005])


def _constant(z):
  """Always class 1 of 2."""
  return jnp.broadcast_to(jnp.array([0.0, 1.0]), (z.shape[0], 2))


def test_certify_defaults_are_cohens():
  # n = 100,000 draws and alpha = 0.001 by default: a constant classifier counts n of n, and
  # the Clopper-Pearson bound of n successes is alpha^(1/n), so R = sigma Phi^-1(alpha^(1/n))
  # (one more default draw moves R by 7e-7). pred is int64, the radius float64.
  pred, radius = smoothing.certify(_constant, np.full((1, 2), 0.5, np.float32),
                                   key=jax.random.key(0), sigma=0.25)
  assert pred.dtype == np.int64 and pred.tolist() == [1] and radius.dtype == np.float64
  np.testing.assert_allclose(radius, [0.25 * norm.ppf(0.001 ** (1 / 100_000))], rtol=1e-9)


def _linear(z):
  s = z @ jnp.array([0.6, 0.8]) - 0.7
  return jnp.stack([-s, s], -1)


def test_certify_counts_the_estimation_stream():
  # nA is read off stream 1 (the estimation draws of `smoothing.sample`), cA off stream 0;
  # the radius is then Cohen's formula with scipy's Beta quantile (kills certify 71: stream 2).
  x, key, n = np.array([[0.9, 0.6], [0.2, 0.3], [0.5, 0.55]], np.float32), jax.random.key(3), 400
  c_a = smoothing.sample(_linear, x, 100, key=key, sigma=0.25, stream=0).argmax(1)
  n_a = smoothing.sample(_linear, x, n, key=key, sigma=0.25, stream=1)[np.arange(3), c_a]
  p_low = beta_dist.ppf(0.001, n_a, n - n_a + 1)
  pred, radius = smoothing.certify(_linear, x, key=key, sigma=0.25, n=n)
  np.testing.assert_array_equal(pred, np.where(p_low >= 0.5, c_a, -1))
  np.testing.assert_allclose(radius, np.where(p_low >= 0.5, 0.25 * norm.ppf(p_low), 0.0),
                             rtol=1e-9)


def test_certify_names_the_sample_index_given():
  # NaN logits on noisy copies (the input sums to 1, the copies past 1.6 are NaN): the error
  # names the sample by the index passed in (kills certify 19, which numbers from 0).
  def nan_far(z):
    s = z.sum(-1)
    return jnp.stack([s, jnp.where(s > 1.6, jnp.nan, -s)], -1)
  with pytest.raises(UserError, match="of sample 7$"):
    smoothing.certify(nan_far, np.full((1, 2), 0.5, np.float32), key=jax.random.key(0),
                      sigma=0.25, n0=10, n=200, indices=[7])


def test_certify_at_radius_names_the_sample_index_given():
  # As for `certify` (kills certify_at_radius 43).
  def nan_far(z):
    s = z.sum(-1)
    return jnp.stack([s, jnp.where(s > 1.6, jnp.nan, -s)], -1)
  with pytest.raises(UserError, match="of sample 7$"):
    smoothing.certify_at_radius(nan_far, np.full((1, 2), 0.5, np.float32), 0.1,
                                key=jax.random.key(0), sigma=0.25, n0=10, n=200, indices=[7])


@pytest.mark.parametrize("kwargs, name", [
    (dict(sigma=0.0), "sigma"), (dict(alpha=1.5), "alpha"), (dict(n0=0), "n0"), (dict(n=0), "n"),
    (dict(batch_size=0), "batch_size")])
def test_certify_at_radius_checks_every_argument(kwargs, name):
  # Kills certify_at_radius 12-16 (an argument left out of the check).
  args = {"key": jax.random.key(0), "sigma": 0.25, "n": 100, **kwargs}
  with pytest.raises(UserError, match=f"^{name}: "):
    smoothing.certify_at_radius(_constant, np.full((1, 2), 0.5, np.float32), 0.1, **args)


def test_certify_at_radius_warns_about_a_radius_covering_the_box():
  # d = 2: the box's L2 diameter is sqrt(2) = 1.414; 1.5 covers it, 1.2 does not (kills
  # certify_at_radius 27, 29, 30, 34: no or another warning; 38: d read off shape[2:] = 1).
  x, kw = np.full((1, 2), 0.5, np.float32), dict(key=jax.random.key(0), sigma=0.25, n=100)
  with pytest.warns(UserWarning, match=r"^eps: the l2 radius 1.5 covers the whole input box "
                    r"\[0, 1\]\^2 \(its l2 diameter is 1.41421\)"):
    smoothing.certify_at_radius(_constant, x, 1.5, **kw)
  with warnings.catch_warnings():
    warnings.simplefilter("error", UserWarning)
    smoothing.certify_at_radius(_constant, x, 1.2, **kw)


def test_certify_at_radius_selects_from_the_n0_selection_draws():
  # n0 = 1: cA is the class of selection draw 0 (stream 0, `smoothing.sample`; one noise draw
  # shared by all inputs), right or wrong. Away from the boundary (|s| > 0.08, pA >= 0.63) a
  # right cA is certified at eps = 0.01 and a wrong one never (kills certify_at_radius 107:
  # cA from stream 1, which differs at 8 of these points; 108: cA from no draw, class 0).
  x = np.stack([np.linspace(0.0, 1.0, 41), np.full(41, 0.5)], 1).astype(np.float32)
  key, s = jax.random.key(3), x @ np.array([0.6, 0.8]) - 0.7
  c_a = smoothing.sample(_linear, x, 1, key=key, sigma=0.25, stream=0).argmax(1)
  right, clear = c_a == (s > 0), np.abs(s) > 0.08
  seq = smoothing.certify_at_radius(_linear, x, 0.01, key=key, sigma=0.25, n0=1, n=2000)
  assert (~right & clear).sum() >= 3 and (right & clear & (c_a == 1)).sum() >= 3
  np.testing.assert_array_equal(seq.certified[clear], right[clear])
  np.testing.assert_array_equal(seq.pred[seq.certified], c_a[seq.certified])


def test_look_schedule_ends_once_at_n_and_refuses_growth_one():
  # 800 = 100 * 2^3 is the last look, once (kills look_schedule 14: m <= n adds it twice); a
  # growth of 1 would never reach n (kills look_schedule 10: an endless loop).
  assert smoothing.look_schedule(800) == (100, 200, 400, 800)
  with pytest.raises(UserError, match="^growth: "):
    smoothing.look_schedule(800, growth=1.0)


@pytest.mark.parametrize("kwargs, name", [
    (dict(sigma=0.0), "sigma"), (dict(alpha=1.5), "alpha"), (dict(n=0), "n"),
    (dict(batch_size=0), "batch_size")])
def test_predict_checks_every_argument(kwargs, name):
  # Kills predict 8-11 (an argument left out of the check).
  args = {"key": jax.random.key(0), "sigma": 0.25, "n": 100, **kwargs}
  with pytest.raises(UserError, match=f"^{name}: "):
    smoothing.predict(_constant, np.full((1, 2), 0.5, np.float32), **args)


def test_predict_tests_the_estimation_counts():
  # PREDICT's answer from the counts of stream 1 (`smoothing.sample`) and scipy's two-sided
  # binomial test at level alpha, as int64 (kills predict 29: stream 2; 65, 67: dtype).
  x, key, n = np.array([[0.9, 0.6], [0.2, 0.3], [0.45, 0.55], [0.5, 0.5]], np.float32), \
      jax.random.key(4), 300
  counts = smoothing.sample(_linear, x, n, key=key, sigma=0.25, stream=1)
  want = [int(c.argmax()) if binomtest(int(c.max()), int(c.sum()), 0.5).pvalue <= 0.01 else -1
          for c in counts]
  got = smoothing.predict(_linear, x, key=key, sigma=0.25, n=n, alpha=0.01)
  assert got.dtype == np.int64 and got.tolist() == want and -1 in want


def test_predict_names_the_sample_index_given():
  # Kills predict 19, 27 (the indices are not passed on).
  def nan_far(z):
    s = z.sum(-1)
    return jnp.stack([s, jnp.where(s > 1.6, jnp.nan, -s)], -1)
  with pytest.raises(UserError, match="of sample 7$"):
    smoothing.predict(nan_far, np.full((1, 2), 0.5, np.float32), key=jax.random.key(0),
                      sigma=0.25, n=200, indices=[7])


def test_certify_at_radius_equals_the_sequential_rule_written_out():
  # The documented rule with the defaults (n0 100, n 100,000, alpha 0.001, looks 100, 200, ...,
  # 51,200, 100,000; alpha / 20 at each early look, alpha / 2 at n), scipy's Beta quantiles and
  # the prefix counts of stream 1 (`smoothing.sample`, draw j is the same at every look).
  # Kills certify_at_radius 2, 5, 6 (defaults), 77, 78, 80 (the last look's need), 128 (first
  # draw), 150 (stream), 173 (the draws left), 185, 192 (dtypes).
  s_wanted = np.array([0.12, 0.17, 0.19, 0.2, 0.21, 0.23, 0.26, 0.4])
  x = np.stack([(s_wanted - 0.02) / 0.6, np.full(8, 0.9)], 1).astype(np.float32)
  key, sigma, eps, n = jax.random.key(6), 0.25, 0.2, 100_000
  looks = [100 * 2 ** k for k in range(10)] + [n]
  levels = [0.0005 / 10] * 10 + [0.0005]
  p_star = norm.cdf(eps / sigma)
  k = np.arange(1, n + 1)
  need_last = k[np.argmax(beta_dist.ppf(0.0005, k, n - k + 1) >= p_star)]
  c_a = smoothing.sample(_linear, x, 100, key=key, sigma=sigma, stream=0).argmax(1)
  certified, done, active = np.zeros(8, bool), np.zeros(8, int), np.ones(8, bool)
  for n_k, a_k in zip(looks, levels):
    n_a = smoothing.sample(_linear, x, n_k, key=key, sigma=sigma, stream=1)[np.arange(8), c_a]
    lower = np.where(n_a > 0, beta_dist.ppf(a_k, n_a, n_k - n_a + 1), 0.0)
    upper = np.where(n_a < n_k, beta_dist.ppf(1 - a_k, n_a + 1, n_k - n_a), 1.0)
    now = active & (lower >= p_star)
    certified |= now
    done[active] = n_k
    active &= ~now & (upper >= p_star) & (n_a + n - n_k >= need_last)
  seq = smoothing.certify_at_radius(_linear, x, eps, key=key, sigma=sigma)
  assert seq.pred.dtype == np.int64 and seq.num_draws.dtype == np.int64
  np.testing.assert_array_equal(seq.certified, certified)
  np.testing.assert_array_equal(seq.pred, np.where(certified, c_a, -1))
  np.testing.assert_array_equal(seq.num_draws, 100 + done)
  assert len(set(done)) >= 3          # decided at several looks


def test_dga_passes_the_kl_reduction_on():
  # The authors' variant of the TRADES term: KL / C (kills dga 20, which drops the argument).
  nat, adv, y, lp_nat, lp_adv, rows, kl, target = _two_rows()
  penalty = -np.log(np.exp(lp_nat[rows, y]) + np.exp(lp_adv[rows, target]))
  want = 0.5 * (-lp_nat[rows, y] + 6.0 * kl / 3) + penalty
  got = losses.dga(jnp.asarray(nat), jnp.asarray(adv), jnp.asarray(y), beta=0.5,
                   kl_reduction="mean")
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
