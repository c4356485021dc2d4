"""APGD (ce, dlr, dlr-targeted, conf): closed-form linear cases, the ball/box contract, batch
independence, EOT, bad input, and a comparison with torchattacks' independent APGD."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jax_abstain import attacks
from jax_abstain.attacks import common, l1
from jax_abstain.attacks.apgd import checkpoint_schedule, target_classes
from jax_abstain.errors import UserError


def linear_problem(n=8, d=30, c=4, seed=0):
  """Linear logits and inputs in [0.4, 0.6]; the minimal Linf / L2 perturbations are
  ``min_j m_j / ||w_y - w_j||_{1 or 2}`` as long as the optimal step stays inside the box,
  which is checked."""
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(d, c)), jnp.float32)
  x = jnp.asarray(rng.uniform(0.4, 0.6, size=(n, d)), jnp.float32)
  b = -0.5 * w.sum(0)  # every class boundary passes through the centre of the box
  f = lambda z: z.reshape(z.shape[0], -1) @ w + b

  def distances(x):
    y = jnp.argmax(f(x), -1)
    z = f(x)
    m = jnp.take_along_axis(z, y[:, None], -1) - z                     # [n, c]
    dw = w[:, y].T[:, :, None] - w[None]                                 # [n, d, c]
    other = jnp.arange(c)[None] != y[:, None]
    d_linf = jnp.where(other, m / jnp.abs(dw).sum(1), jnp.inf)
    d_l2 = jnp.where(other, m / jnp.sqrt((dw ** 2).sum(1)), jnp.inf)
    # Largest coordinate change of the optimal L2 step towards each class.
    l2_coord = d_l2 * jnp.abs(dw).max(1) / jnp.sqrt((dw ** 2).sum(1))
    return y, d_linf.min(-1), d_l2.min(-1), jnp.where(other, l2_coord, 0).max(-1)

  x = x[:n]
  y, d_linf, d_l2, l2_coord = distances(x)
  assert float(d_linf.max()) < 0.3 and float(l2_coord.max()) < 0.3
  return f, x, y, {"linf": d_linf, "l2": d_l2}


def mlp(d=20, c=5, seed=0, hidden=32):
  rng = np.random.default_rng(seed)
  w1 = jnp.asarray(rng.normal(size=(d, hidden)) / np.sqrt(d), jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(hidden, c)) / np.sqrt(hidden) * 3, jnp.float32)
  return lambda z: jnp.tanh(z.reshape(z.shape[0], -1) @ w1) @ w2


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss,n_classes", [("ce", 2), ("dlr-targeted", 4)])
def test_linear_minimal_perturbation(norm, loss, n_classes):
  # CE's gradient mixes all other classes, so with > 2 classes it need not head for the
  # closest boundary; the targeted DLR runs try each target and find the closest one.
  f, x, y, dist = linear_problem(c=n_classes)
  d = dist[norm]
  run = jax.jit(lambda eps: attacks.apgd_run(f, x, y, key=jax.random.key(0), eps=eps, norm=norm,
                                             n_iter=40, loss=loss, n_target_classes=3))
  above = run(d * 1.03)
  assert not bool(above.robust.any()), "APGD misses a perturbation 3% above the minimal one"
  assert not bool(attacks.is_robust(f, above.x_adv, y).any())
  below = run(d * 0.97)
  assert bool(below.robust.all()) and bool(attacks.is_robust(f, below.x_adv, y).all())
  assert bool(jnp.all(common.norm_of(above.x_adv - x, norm) <= d * 1.03 + 1e-6))


@settings(max_examples=8)
@given(eps=st.floats(0.01, 0.5), norm=st.sampled_from(["linf", "l2", "l1"]),
       loss=st.sampled_from(["ce", "dlr", "dlr-targeted", "conf"]), seed=st.integers(0, 3))
def test_ball_and_box(eps, norm, loss, seed):
  x = jax.random.uniform(jax.random.key(seed), (6, 20))
  x = x.at[0].set(0.0).at[1].set(1.0)  # inputs on the box faces
  y = jnp.argmax(_MLP(x), -1)
  x_adv = _apgd_jit(norm, loss)(x, y, jnp.float32(eps))
  chex.assert_shape(x_adv, x.shape)
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert float(jnp.max(common.norm_of(x_adv - x, norm))) <= eps + 1e-6



_MLP = mlp(seed=5)


@functools.cache
def _apgd_jit(norm, loss):
  """One compilation per (norm, loss) across hypothesis examples: eps is a jit argument."""
  return jax.jit(lambda x, y, eps: attacks.apgd(_MLP, x, y, key=jax.random.key(1), eps=eps,
                                                norm=norm, n_iter=10, loss=loss,
                                                n_target_classes=2))


def test_l1_projection_matches_scipy():
  from scipy import optimize
  rng = np.random.default_rng(0)
  for _ in range(8):
    x = rng.uniform(0, 1, 8)
    x[:2] = (0.0, 1.0)
    u = rng.normal(size=8) * 0.5
    eps = rng.uniform(0.1, 2.0)
    ref = optimize.minimize(
        lambda z: ((z - u) ** 2).sum(), np.zeros(8), method="SLSQP",
        bounds=[(-xi, 1 - xi) for xi in x],
        constraints=[{"type": "ineq", "fun": lambda z: eps - np.sqrt(z ** 2 + 1e-14).sum()}],
        options={"ftol": 1e-12, "maxiter": 1000}).x
    got = np.asarray(l1.project_l1_box(jnp.asarray(x[None], jnp.float32),
                                       jnp.asarray(u[None], jnp.float32), eps))[0]
    np.testing.assert_allclose(got, ref, atol=3e-4)
    assert np.abs(got).sum() <= eps


def test_l1_apgd_on_a_linear_model():
  """The minimal L1 perturbation of a linear binary model fills the coordinates with the
  largest |w_1 - w_0| up to the box, greedily (a fractional knapsack). l1-APGD's sparse steps
  reach within 30% of it in 100 iterations (at 1.15-1.2x some samples survive; AutoAttack's
  L1 version adds a 3 eps, 2 eps, eps schedule, not implemented here)."""
  rng = np.random.default_rng(0)
  d, n = 30, 8
  w = rng.normal(size=(d, 2)).astype(np.float32)
  b = -0.5 * w.sum(0)
  x = rng.uniform(0.4, 0.6, size=(n, d)).astype(np.float32)
  f = lambda z: z.reshape(z.shape[0], -1) @ w + b
  y = np.asarray(jnp.argmax(f(jnp.asarray(x)), -1))

  def minimal(xi, yi):
    dw = w[:, 1 - yi] - w[:, yi]
    need = -(xi @ dw + b[1 - yi] - b[yi])
    room = np.where(dw > 0, 1 - xi, xi)
    cost = 0.0
    for i in np.argsort(-np.abs(dw)):
      if abs(dw[i]) * room[i] >= need:
        return cost + need / abs(dw[i])
      need -= abs(dw[i]) * room[i]
      cost += room[i]
    return np.inf

  dstar = jnp.asarray([minimal(x[i], y[i]) for i in range(n)], jnp.float32)
  run = jax.jit(lambda eps: attacks.apgd_run(f, jnp.asarray(x), jnp.asarray(y),
                                             key=jax.random.key(0), eps=eps, norm="l1",
                                             n_iter=100))
  above = run(dstar * 1.3)
  assert not bool(above.robust.any())
  assert bool(jnp.all(common.norm_of(above.x_adv - x, "l1") <= dstar * 1.3 + 1e-6))
  assert bool(run(dstar * 0.97).robust.all())


def test_conf_finds_higher_confidence_points_than_ce():
  f = mlp(seed=1)
  x = jax.random.uniform(jax.random.key(2), (32, 20))
  y = jnp.argmax(f(x), -1)

  def other_conf(x_adv):
    p = jax.nn.softmax(f(x_adv), -1)
    return jnp.max(jnp.where(jax.nn.one_hot(y, p.shape[-1], dtype=bool), 0.0, p), -1)

  key = jax.random.key(0)
  x_ce = attacks.apgd(f, x, y, key=key, eps=0.3, loss="ce", n_iter=20)
  x_conf = attacks.apgd(f, x, y, key=key, eps=0.3, loss="conf", n_iter=20)
  c_ce, c_conf = other_conf(x_ce), other_conf(x_conf)
  assert float(c_conf.mean()) > float(c_ce.mean())
  assert float(jnp.mean(c_conf >= c_ce - 1e-3)) >= 0.9


@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
def test_same_result_for_any_batch_split(loss):
  f = mlp(seed=2)
  x = jax.random.uniform(jax.random.key(3), (12, 20))
  y = jnp.argmax(f(x), -1)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(7), i))(jnp.arange(12))
  kw = dict(eps=0.08, n_iter=15, loss=loss, n_target_classes=3, n_restarts=2)
  whole = attacks.apgd_run(f, x, y, key=keys, **kw)
  parts = [attacks.apgd_run(f, x[a:b], y[a:b], key=keys[a:b], **kw) for a, b in ((0, 5), (5, 12))]
  np.testing.assert_array_equal(whole.robust, jnp.concatenate([p.robust for p in parts]))
  np.testing.assert_allclose(whole.x_adv, jnp.concatenate([p.x_adv for p in parts]), atol=1e-6)


def test_target_classes_are_second_to_tenth_most_likely():
  logits = jnp.asarray([[0.0, 5.0, 3.0, 4.0, 1.0]])
  np.testing.assert_array_equal(target_classes(logits, 9)[:, 0], [3, 2, 4, 0])
  np.testing.assert_array_equal(target_classes(logits, 2)[:, 0], [3, 2])


def test_checkpoint_schedule_matches_published_numbers():
  is_ck, window = checkpoint_schedule(100)
  # p1 = 22 iterations, then windows shrink by 3 down to 6 (AutoAttack's n_iter=100 defaults).
  np.testing.assert_array_equal(window[is_ck][:6], [22, 19, 16, 13, 10, 7])
  assert set(window[is_ck][6:]) == {6}


def test_eot_on_a_randomized_model():
  f = mlp(seed=3)
  rand = attacks.per_example_randomized(
      lambda z, k: f(jnp.clip(z + 0.02 * jax.random.normal(k, z.shape), 0, 1)))
  x = jax.random.uniform(jax.random.key(4), (8, 20))
  y = jnp.argmax(f(x), -1)
  keys = common.example_keys(jax.random.key(0), 8)
  x_adv = attacks.apgd(rand, x, y, key=keys, eps=0.1, n_iter=10, randomized=True, eot_iter=4)
  assert float(jnp.max(common.norm_of(x_adv - x, "linf"))) <= 0.1 + 1e-6
  again = attacks.apgd(rand, x[:3], y[:3], key=keys[:3], eps=0.1, n_iter=10, randomized=True,
                       eot_iter=4)
  np.testing.assert_allclose(again, x_adv[:3], atol=1e-6)
  assert float(jnp.mean(attacks.is_robust(f, x_adv, y))) < 1.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=0.0), "eps"), (dict(eps=-1.0), "eps"), (dict(eps=0.1, norm="l3"), "norm"),
    (dict(eps=0.1, loss="hinge"), "loss")])
def test_bad_arguments_raise_user_errors(kwargs, match):
  f = mlp()
  x = jnp.full((2, 20), 0.5)
  with pytest.raises(UserError, match=match):
    attacks.apgd(f, x, jnp.zeros(2, jnp.int32), key=jax.random.key(0), **kwargs)


def test_bad_inputs_raise_user_errors():
  f = mlp()
  with pytest.raises(UserError, match=r"\[0, 1\]"):
    attacks.apgd(f, jnp.full((2, 20), 1.5), jnp.zeros(2, jnp.int32), key=jax.random.key(0), eps=0.1)
  with pytest.raises(UserError, match="y: expected labels of shape"):
    attacks.apgd(f, jnp.full((2, 20), 0.5), jnp.zeros(3, jnp.int32), key=jax.random.key(0), eps=0.1)
  with pytest.raises(UserError, match="4 classes"):
    attacks.apgd(mlp(c=3), jnp.full((2, 20), 0.5), jnp.zeros(2, jnp.int32), key=jax.random.key(0),
                 eps=0.1, loss="dlr-targeted")


def test_matches_torchattacks_apgd_on_the_same_weights():
  """Robust accuracy of our APGD-CE vs torchattacks' APGD (an independent implementation of
  the same schedule) on one tiny MLP; random starts differ, so only the rates are compared."""
  torch = pytest.importorskip("torch")
  torchattacks = pytest.importorskip("torchattacks")
  rng = np.random.default_rng(0)
  d, h, c, n = 20, 32, 5, 200
  w1 = rng.normal(size=(d, h)).astype(np.float32) / np.sqrt(d) * 3
  w2 = rng.normal(size=(h, c)).astype(np.float32) / np.sqrt(h) * 3
  x = rng.uniform(0, 1, size=(n, d)).astype(np.float32)
  f = lambda z: jnp.tanh(z @ w1) @ w2
  y = np.asarray(jnp.argmax(f(jnp.asarray(x)), -1))
  net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, h, bias=False), torch.nn.Tanh(),
                            torch.nn.Linear(h, c, bias=False))
  with torch.no_grad():
    net[1].weight.copy_(torch.from_numpy(w1.T))
    net[3].weight.copy_(torch.from_numpy(w2.T))
  for norm, eps in (("linf", 0.05), ("l2", 0.25)):
    ta = torchattacks.APGD(net, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=40,
                           n_restarts=1, loss="ce", seed=0)
    # torchattacks wants image batches: the same vectors as [n, 1, 1, d].
    x_t = ta(torch.from_numpy(x.reshape(n, 1, 1, d)), torch.from_numpy(y.copy()).long())
    rob_torch = float((net(x_t).argmax(1).numpy() == y).mean())
    x_j = attacks.apgd(f, jnp.asarray(x), jnp.asarray(y), key=jax.random.key(0), eps=eps,
                       norm=norm, n_iter=40)
    rob_jax = float(jnp.mean(attacks.is_robust(f, x_j, jnp.asarray(y))))
    print(f"{norm}: robust accuracy jax {rob_jax:.3f} torchattacks {rob_torch:.3f}")
    assert 0.1 < rob_torch < 0.9, rob_torch  # the comparison is informative
    assert abs(rob_jax - rob_torch) <= 0.03, (norm, rob_jax, rob_torch)
