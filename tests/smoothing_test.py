"""Tests for smoothing.py (sampling, PREDICT, CERTIFY, sequential CERTIFY) and the L_noise /
L_CRA losses of losses.py, against closed forms: a constant classifier (counts are all n), a
linear classifier on 2-D data (the smoothed classifier is analytic: pA = Phi(dist / sigma), so
the true L2 radius is the distance to the boundary) and scipy's Clopper-Pearson intervals."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, strategies as st
from scipy import stats

from jax_abstain import losses, smoothing
from jax_abstain.errors import UserError

KEY = jax.random.key(0)
SIGMA = 0.25


def constant_fn(z):
  """Always class 2 of 3."""
  return jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), (z.shape[0], 3))


W, B = np.array([0.6, 0.8], np.float32), -0.7   # unit normal: distance = |w.x + b|


def linear_fn(z):
  s = z @ jnp.asarray(W) + B
  return jnp.stack([-s, s], -1)


def grid_points(num, lo=0.0, hi=1.0, seed=0):
  return np.random.default_rng(seed).uniform(lo, hi, size=(num, 2)).astype(np.float32)


class TestConfidenceBounds:

  @given(n=st.integers(1, 5000), frac=st.floats(0, 1), alpha=st.floats(1e-6, 0.4))
  def test_matches_scipy_exact_interval(self, n, frac, alpha):
    k = int(round(frac * n))
    # A two-sided exact interval at 1 - 2 alpha has one-sided alpha tails.
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    np.testing.assert_allclose(smoothing.lower_confidence_bound(k, n, alpha), ci.low,
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(smoothing.upper_confidence_bound(k, n, alpha), ci.high,
                               rtol=1e-9, atol=1e-12)

  @pytest.mark.parametrize("n", [1, 100, 100_000])
  def test_edge_counts(self, n):
    alpha = 0.001
    assert smoothing.lower_confidence_bound(0, n, alpha) == 0.0
    assert smoothing.upper_confidence_bound(n, n, alpha) == 1.0
    # k = n: P(X = n) = p^n = alpha at the bound; k = 0: (1 - p)^n = alpha.
    np.testing.assert_allclose(smoothing.lower_confidence_bound(n, n, alpha), alpha ** (1 / n))
    np.testing.assert_allclose(smoothing.upper_confidence_bound(0, n, alpha),
                               1 - alpha ** (1 / n))


class TestCertify:

  def test_constant_classifier_closed_form(self):
    n, alpha = 2000, 0.001
    pred, radius = smoothing.certify(constant_fn, grid_points(3), key=KEY, sigma=SIGMA,
                                     n0=10, n=n, alpha=alpha, batch_size=512)
    np.testing.assert_array_equal(pred, [2, 2, 2])
    np.testing.assert_allclose(radius, SIGMA * stats.norm.ppf(alpha ** (1 / n)), rtol=1e-12)

  def test_linear_classifier_against_true_distance(self):
    n, alpha = 4000, 0.001
    x = grid_points(24)
    dist = x @ W + B
    pred, radius = smoothing.certify(linear_fn, x, key=KEY, sigma=SIGMA, n=n, alpha=alpha)
    p_a = stats.norm.cdf(np.abs(dist) / SIGMA)
    # The bound lies within a few standard errors below the true pA (and never above it except
    # with probability alpha); 7 standard errors covers the CP margin plus estimation noise.
    p_low = np.clip(p_a - 7 * np.sqrt(p_a * (1 - p_a) / n) - 1e-4, 0, 1)
    expected_min = np.where(p_low > 0.5, SIGMA * stats.norm.ppf(p_low), 0.0)
    certified = pred >= 0
    assert np.all(pred[certified] == (dist[certified] > 0))
    assert np.all(radius <= np.abs(dist) + 1e-9)
    # cA comes from the n0 = 100 selection draws (stream 0): near the boundary they may pick
    # the wrong class (its pA < 1/2), and then CERTIFY abstains; elsewhere the bound holds.
    c_a = smoothing.sample(linear_fn, x, 100, key=KEY, sigma=SIGMA, stream=0).argmax(1)
    right = c_a == (dist > 0)
    assert np.all(pred[~right] == -1) and right.mean() > 0.8
    assert np.all(radius[right] >= expected_min[right] - 1e-9)
    assert certified[np.abs(dist) > 0.1].all()

  def test_abstains_when_top_class_not_dominant(self):
    on_boundary = np.array([[0.7 * 0.6, 0.7 * 0.8], [0.5, 0.5]], np.float32)  # dist 0, 0.0
    pred, radius = smoothing.certify(linear_fn, on_boundary, key=KEY, sigma=SIGMA, n=2000)
    np.testing.assert_array_equal(pred, [-1, -1])
    np.testing.assert_array_equal(radius, [0.0, 0.0])
    assert smoothing.predict(linear_fn, on_boundary, key=KEY, sigma=SIGMA, n=2000).tolist() == [
        -1, -1]

  def test_predict_far_from_boundary(self):
    x = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)   # dist +0.7, -0.7
    assert smoothing.predict(linear_fn, x, key=KEY, sigma=SIGMA, n=500).tolist() == [1, 0]

  def test_independent_of_batch_size_and_grouping(self):
    x = grid_points(4, 0.3, 0.7)
    a = smoothing.certify(linear_fn, x, key=KEY, sigma=SIGMA, n=1500, batch_size=1000)
    b = smoothing.certify(linear_fn, x, key=KEY, sigma=SIGMA, n=1500, batch_size=37)
    c = smoothing.certify(linear_fn, x[2:3], key=KEY, sigma=SIGMA, n=1500, batch_size=256,
                          indices=[2])
    chex.assert_trees_all_equal(a, b)
    assert (a[0][2], a[1][2]) == (c[0][0], c[1][0])
    counts = [smoothing.sample(linear_fn, x, 1500, key=KEY, sigma=SIGMA, batch_size=bs)
              for bs in (1, 64, 1500)]
    np.testing.assert_array_equal(counts[0], counts[1])
    np.testing.assert_array_equal(counts[0], counts[2])
    assert (counts[0].sum(1) == 1500).all()

  def test_nnx_module_same_as_callable(self):
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(1))
    x = grid_points(2)
    a = smoothing.certify(model, x, key=KEY, sigma=SIGMA, n=800)
    b = smoothing.certify(lambda z: model(z), x, key=KEY, sigma=SIGMA, n=800)
    chex.assert_trees_all_close(a, b)

  def test_linf_reading(self):
    np.testing.assert_allclose(smoothing.linf_radius([0.5, 0.0], (32, 32, 3)),
                               [0.5 / math.sqrt(3072), 0.0])

  @pytest.mark.parametrize("kwargs, name", [
      (dict(sigma=0.0), "sigma"), (dict(sigma=-1.0), "sigma"), (dict(sigma=float("nan")), "sigma"),
      (dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha"), (dict(n0=0), "n0"),
      (dict(n=0), "n"), (dict(batch_size=0), "batch_size"), (dict(n=2.5), "n")])
  def test_bad_arguments(self, kwargs, name):
    args = dict(key=KEY, sigma=SIGMA, n0=10, n=10) | kwargs
    with pytest.raises(UserError, match=f"^{name}:"):
      smoothing.certify(linear_fn, grid_points(1), **args)

  @pytest.mark.parametrize("x", [np.full((1, 2), 1.5, np.float32), np.full((1, 2), -0.1, np.float32),
                                 np.full((1, 2), np.nan, np.float32), np.zeros(2, np.float32)])
  def test_bad_inputs(self, x):
    with pytest.raises(UserError, match="^x:"):
      smoothing.certify(linear_fn, x, key=KEY, sigma=SIGMA, n=10)


class TestSequential:

  def test_schedule_and_spending(self):
    looks = smoothing.look_schedule(100_000, 100, 2.0)
    assert looks[0] == 100 and looks[-1] == 100_000 and list(looks) == sorted(set(looks))
    levels = smoothing.alpha_spending(len(looks), 0.001)
    np.testing.assert_allclose(levels.sum(), 0.001)
    assert levels[-1] == 0.0005
    with pytest.raises(UserError, match="^eps:"):
      smoothing.certify_at_radius(linear_fn, grid_points(1), 0.0, key=KEY, sigma=SIGMA, n=10)

  def test_agrees_with_certify_and_saves_forward_passes(self):
    # The paper's n; a 2-D linear model makes 100k draws per point cheap.
    n0, n, eps = 100, 100_000, 0.25
    x = grid_points(60)
    pred, radius = smoothing.certify(linear_fn, x, key=KEY, sigma=SIGMA, n0=n0, n=n)
    seq = smoothing.certify_at_radius(linear_fn, x, eps, key=KEY, sigma=SIGMA, n0=n0, n=n)
    plain = (pred >= 0) & (radius >= eps)
    # Borderline for CERTIFY itself: radius within 0.02 of eps (the alpha/2 of the last look
    # moves the radius by < 0.005 here; the rest is Monte Carlo noise).
    clear = np.abs(radius - eps) > 0.02
    assert clear.sum() >= 50
    np.testing.assert_array_equal(seq.certified[clear], plain[clear])
    np.testing.assert_array_equal(seq.pred[seq.certified], pred[seq.certified])
    # Sound: never certifies beyond the true distance.
    assert np.all(np.abs(x @ W + B)[seq.certified] >= eps)
    saving = (n0 + n) * len(x) / seq.num_draws.sum()
    assert saving >= 10, saving


class TestCertifiedLosses:

  def test_noise_loss_is_ce_of_noisy_copies(self):
    logits = jnp.array([[[2.0, 0.0]], [[0.0, 0.0]]])   # K=2, B=1
    expected = 0.5 * (math.log(1 + math.exp(-2)) + math.log(2))
    np.testing.assert_allclose(losses.noise(logits, jnp.array([0])), [expected], rtol=1e-6)
    np.testing.assert_allclose(losses.noise(logits[0], jnp.array([0])),
                               [math.log(1 + math.exp(-2))], rtol=1e-6)

  def test_radius_and_cra_hand_computed(self):
    # gamma * logits = [log 3, 0] -> q = [3/4, 1/4]; Phi^-1(3/4) = 0.6744898 = -Phi^-1(1/4).
    logits = jnp.array([[[math.log(3) / 4, 0.0]]])
    sigma, label = 0.5, jnp.array([0])
    cr = sigma / 2 * 2 * 0.6744897501960817
    np.testing.assert_allclose(losses.certified_radius(logits, label, sigma=sigma), [cr],
                               rtol=1e-5)
    np.testing.assert_allclose(losses.certified_radius(logits, jnp.array([1]), sigma=sigma),
                               [-cr], rtol=1e-5)
    # The code's top-two radius is the radius of the top class, whatever the label.
    np.testing.assert_allclose(
        losses.certified_radius(logits, jnp.array([1]), sigma=sigma, top_two=True), [cr],
        rtol=1e-4)
    p0 = 3 ** 0.25 / (3 ** 0.25 + 1)   # temperature-1 softmax of the same logits
    ce = -math.log(p0)
    np.testing.assert_allclose(losses.cra(logits, label, sigma=sigma, beta=0.7),
                               [(1 - p0) * cr + 0.7 * ce], rtol=1e-5)

  def test_code_variant_averages_logits(self):
    logits = jnp.array([[[2.0, 0.0]], [[0.0, 2.0]]])   # mean logits [1, 1]: CE = log 2
    label = jnp.array([0])
    # q = [1/2, 1/2] (symmetric), so both radii are 0 up to the 1e-6 shifts.
    np.testing.assert_allclose(losses.cra(logits, label, sigma=1.0, beta=1.0, code_variant=True),
                               [math.log(2)], atol=1e-4)
    paper = 0.5 * (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2)))
    np.testing.assert_allclose(losses.cra(logits, label, sigma=1.0, beta=1.0), [paper],
                               atol=1e-4)

  @pytest.mark.parametrize("code_variant", [False, True])
  def test_finite_gradients_where_phi_inverse_saturates(self, code_variant):
    k = jax.random.key(3)
    logits = 200.0 * jax.random.normal(k, (16, 8, 10))   # softmax(4 f) is exactly one-hot
    logits = logits.at[:, 0].set(0.0)                     # and one exactly uniform row
    labels = jnp.arange(8) % 10

    def loss(z):
      return losses.cra(z, labels, sigma=0.12, code_variant=code_variant).mean()

    value, grad = jax.value_and_grad(loss)(logits)
    assert jnp.isfinite(value)
    assert jnp.isfinite(grad).all()
    assert jnp.abs(grad).sum() > 0

  def test_radius_term_direction_on_a_misclassified_point(self):
    # Label 0, but the (noisy) logits favour class 1: a robust-inaccurate point. One gradient
    # step of the radius term (beta = 0) on the logits: the code's top-two radius (the radius of
    # the wrong prediction) goes down, as L_CRA intends. Eq. 9 as printed is the radius of
    # class y, negative here, and minimising it makes the wrong prediction *more* robust.
    logits = jnp.array([[[0.0, 0.4, -0.2]], [[0.1, 0.3, 0.0]]])
    label = jnp.array([0])

    def top_two_radius(z):
      return losses.certified_radius(z, label, sigma=0.5, top_two=True)[0]

    for code_variant, sign in ((True, -1), (False, 1)):
      grad = jax.grad(lambda z: losses.cra(z, label, sigma=0.5, beta=0.0,
                                           code_variant=code_variant)[0])(logits)
      change = top_two_radius(logits - 0.1 * grad) - top_two_radius(logits)
      assert sign * change > 0, (code_variant, change)
