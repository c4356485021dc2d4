"""Loss values against hand-computed numbers (math module, not the code under test)."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jax_abstain import attacks, losses


def softmax(v):
  e = [math.exp(a) for a in v]
  return [a / sum(e) for a in e]


NAT = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.5]])
ADV = jnp.array([[1.0, 1.5, 0.0], [0.2, 0.3, 2.0]])
Y = jnp.array([1, 1], jnp.int32)


def test_cross_entropy_hand_computed():
  want = [-math.log(softmax([2, 0, 0])[1]), -math.log(softmax([0, 1, 0.5])[1])]
  chex.assert_trees_all_close(losses.cross_entropy(NAT, Y), jnp.array(want), rtol=1e-6)


def test_kl_direction_and_reductions():
  p, q = softmax([2, 0, 0]), softmax([1, 1.5, 0])
  kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))
  got = losses.kl_divergence(NAT[:1], ADV[:1])
  chex.assert_trees_all_close(got, jnp.array([kl]), rtol=1e-6)
  chex.assert_trees_all_close(losses.kl_divergence(NAT[:1], ADV[:1], reduction="mean"),
                              jnp.array([kl / 3]), rtol=1e-6)
  # KL is not symmetric: the clean distribution comes first.
  assert abs(float(losses.kl_divergence(ADV[:1], NAT[:1])[0]) - kl) > 1e-3


def test_trades_hand_computed():
  p, q = softmax([0, 1, 0.5]), softmax([0.2, 0.3, 2.0])
  kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))
  want = -math.log(p[1]) + 6.0 * kl
  chex.assert_trees_all_close(losses.trades(NAT[1:], ADV[1:], Y[1:], beta=6.0), jnp.array([want]),
                              rtol=1e-6)


def test_era_hand_computed():
  # Sample 0: F(x) = 0, so the target is the best other class at x': class 1 (logit 1.5).
  p, q = softmax([2, 0, 0]), softmax([1, 1.5, 0])
  kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))
  trades = -math.log(p[1]) + 6.0 * kl
  penalty = (1 - p[1]) * -math.log(q[1])
  for beta in (0.0, 0.2, 1.0):
    got = losses.era(NAT[:1], ADV[:1], Y[:1], beta=beta)
    chex.assert_trees_all_close(got, jnp.array([beta * trades + penalty]), rtol=1e-6)
  # The code variant divides the KL by the number of classes.
  got = losses.era(NAT[:1], ADV[:1], Y[:1], beta=1.0, kl_reduction="mean")
  chex.assert_trees_all_close(got, jnp.array([-math.log(p[1]) + 2.0 * kl + penalty]), rtol=1e-6)


def test_era_target_excludes_clean_prediction_not_label():
  # Sample 1: F(x) = 1 (= y), adversarial logits favour class 2: target 2.
  nat, adv = NAT[1:], ADV[1:]
  assert int(losses.top_other_class(adv, jnp.argmax(nat, -1))[0]) == 2
  p, q = softmax([0, 1, 0.5]), softmax([0.2, 0.3, 2.0])
  got = losses.robust_inaccuracy_penalty(nat, adv, Y[1:])
  chex.assert_trees_all_close(got, jnp.array([(1 - p[1]) * -math.log(q[2])]), rtol=1e-6)


def test_dga_paper_and_code_variants():
  p, q = softmax([2, 0, 0]), softmax([1, 1.5, 0])
  got = losses.dga(NAT[:1], ADV[:1], Y[:1], beta=0.0)
  chex.assert_trees_all_close(got, jnp.array([-math.log(p[1] + q[1])]), rtol=1e-6)
  joint = softmax([2, 0, 0, 1.5])    # (k+1)-way softmax over [f(x), f(x')_{c*}]
  got = losses.dga(NAT[:1], ADV[:1], Y[:1], beta=0.0, joint_softmax=True)
  chex.assert_trees_all_close(got, jnp.array([-math.log(joint[1] + joint[3])]), rtol=1e-6)


def test_mart_hand_computed():
  p, q = softmax([2, 0, 0]), softmax([1, 1.5, 0])
  kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))
  bce = -math.log(q[1]) - math.log(1 - q[0])
  want = bce + 6.0 * kl * (1 - p[1])
  chex.assert_trees_all_close(losses.mart(NAT[:1], ADV[:1], Y[:1]), jnp.array([want]), rtol=1e-5)


def test_certified_radius_and_cra_values():
  from scipy.stats import norm
  noisy = jnp.stack([NAT, ADV])      # K=2 noisy copies
  q = np.mean([np.array([softmax(list(4.0 * np.asarray(r))) for r in s]) for s in (NAT, ADV)], 0)
  sigma = 0.25
  want = sigma / 2 * (norm.ppf(q[:, 1]) - norm.ppf(np.max(np.delete(q, 1, 1), 1)))
  chex.assert_trees_all_close(losses.certified_radius(noisy, Y, sigma=sigma), jnp.array(want),
                              rtol=1e-4)
  top = np.sort(q, 1)[:, ::-1]
  want_code = sigma / 2 * (norm.ppf(top[:, 0] - 1e-6) - norm.ppf(top[:, 1] + 1e-6))
  chex.assert_trees_all_close(losses.certified_radius(noisy, Y, sigma=sigma, top_two=True),
                              jnp.array(want_code), rtol=1e-4)
  assert np.all(np.asarray(losses.cra(noisy, Y, sigma=sigma)) > 0)


def test_cra_gradient_finite_where_phi_inverse_saturates():
  logits = jnp.array([[[60.0, -60.0, 0.0]]] * 4)   # softmax saturates to exactly 1 / 0
  g = jax.grad(lambda l: losses.cra(l, jnp.array([0]), sigma=0.5).sum())(logits)
  assert np.all(np.isfinite(np.asarray(g)))


def _linear(w, b):
  return lambda x: x @ w + b


def test_era_gradient_makes_robust_inaccurate_point_non_robust():
  """On a linear 2-D, 3-class model a robustly misclassified point becomes non-robust."""
  x = jnp.array([[0.3, 0.5]])
  y = jnp.array([1], jnp.int32)
  w = jnp.array([[1.0, -1.0, -3.0], [0.0, 0.0, -3.0]])   # F(x) = 0, class 1 is the label
  b = jnp.array([0.0, 0.0, 0.0])
  eps = 0.1

  def robust_margin(w, b):
    # min over the Linf ball of f_0 - f_1 for a linear model: margin - eps * ||w_0 - w_1||_1.
    d = w[:, 0] - w[:, 1]
    return float((x @ d + b[0] - b[1])[0] - eps * jnp.abs(d).sum())

  assert robust_margin(w, b) > 0      # robust and inaccurate
  def loss(params, key):
    f = _linear(*params)
    clean = jnp.argmax(f(x), -1)
    frozen = _linear(*jax.lax.stop_gradient(params))
    x_adv = attacks.pgd(frozen, x, clean, key=key, eps=eps, loss="conf")
    return losses.era(f(x), f(x_adv), y, beta=0.0).mean()
  params = (w, b)
  grad_fn = jax.jit(jax.grad(loss))
  margins = [robust_margin(*params)]
  for step in range(200):
    grads = grad_fn(params, jax.random.key(step))
    params = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
    margins.append(robust_margin(*params))
  assert margins[10] < margins[0]
  assert margins[-1] < 0, margins[-1]   # an eps-perturbation now changes the prediction
