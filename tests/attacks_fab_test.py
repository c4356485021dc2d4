"""FAB-T: the box-constrained hyperplane projections against SciPy, minimal perturbations of
linear models, the ball/box contract and batch independence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from jax_abstain import attacks
from jax_abstain.attacks import common
from jax_abstain.attacks.fab import fab_run, project_hyperplane
from jax_abstain.errors import UserError


def _problem(rng, d):
  t = rng.uniform(0, 1, d)
  t[:2] = (0.0, 1.0)  # points on the box faces
  w = rng.normal(size=d)
  w[2] = 0.0  # a coordinate the constraint ignores
  b = w @ t + rng.normal() * 0.5
  return t, w, b


def _scipy_linf(t, w, b):
  d = len(t)
  # Variables (delta, s): minimise s with |delta_i| <= s, w.delta = b - w.t, t + delta in [0,1].
  cost = np.r_[np.zeros(d), 1.0]
  a_ub = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
  res = optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * d), A_eq=np.r_[w, 0.0][None],
                         b_eq=[b - w @ t], bounds=[(-ti, 1 - ti) for ti in t] + [(0, None)])
  return res.fun if res.status == 0 else None


def _scipy_l2(t, w, b):
  res = optimize.minimize(lambda dl: dl @ dl, np.zeros(len(t)), jac=lambda dl: 2 * dl,
                          constraints=[{"type": "eq", "fun": lambda dl: w @ (t + dl) - b}],
                          bounds=[(-ti, 1 - ti) for ti in t], method="SLSQP",
                          options={"ftol": 1e-12, "maxiter": 500})
  return np.sqrt(res.fun) if res.success else None


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_the_minimal_norm_point_on_the_hyperplane(norm):
  rng = np.random.default_rng(0)
  checked = 0
  for _ in range(20):
    t, w, b = _problem(rng, 8)
    ref = (_scipy_linf if norm == "linf" else _scipy_l2)(t, w, b)
    d = np.asarray(project_hyperplane(jnp.asarray(t[None], jnp.float32),
                                      jnp.asarray(w[None], jnp.float32),
                                      jnp.asarray([b], jnp.float32), norm))[0]
    assert np.all(t + d >= -1e-6) and np.all(t + d <= 1 + 1e-6)
    assert d[2] == 0.0
    if ref is None:  # the hyperplane misses the box: the best corner is returned
      continue
    np.testing.assert_allclose(w @ (t + d), b, atol=1e-4)
    got = np.abs(d).max() if norm == "linf" else np.linalg.norm(d)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5)
    checked += 1
  assert checked >= 10


def _linear(c=4, n=8, d=30, seed=0):
  """Linear logits with boundaries through the box centre; closed-form minimal distances."""
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(d, c)), jnp.float32)
  b = -0.5 * w.sum(0)
  f = lambda z: z.reshape(z.shape[0], -1) @ w + b
  x = jnp.asarray(rng.uniform(0.4, 0.6, size=(n, d)), jnp.float32)
  y = jnp.argmax(f(x), -1)
  m = jnp.take_along_axis(f(x), y[:, None], -1) - f(x)
  dw = w[:, y].T[:, :, None] - w[None]
  other = jnp.arange(c)[None] != y[:, None]
  dist = {"linf": jnp.where(other, m / jnp.abs(dw).sum(1), jnp.inf).min(-1),
          "l2": jnp.where(other, m / jnp.sqrt((dw ** 2).sum(1)), jnp.inf).min(-1)}
  return f, x, y, dist


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_finds_the_minimal_perturbation_of_a_linear_model(norm):
  f, x, y, dist = _linear()
  res = jax.jit(lambda x, y: fab_run(f, x, y, key=jax.random.key(0), norm=norm, n_iter=30))(x, y)
  ratio = np.asarray(res.dist / dist[norm])
  assert np.all(ratio >= 1 - 1e-4) and np.all(ratio <= 1.01), ratio
  assert not bool(attacks.is_robust(f, res.x_adv, y).any())
  np.testing.assert_allclose(common.norm_of(res.x_adv - x, norm), res.dist, rtol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_mode_stays_in_ball_and_box_and_breaks_exactly_what_it_can(norm):
  f, x, y, dist = _linear(seed=1)
  eps = jnp.where(jnp.arange(8) % 2 == 0, dist[norm] * 1.02, dist[norm] * 0.98)
  run = jax.jit(lambda x, y, eps: attacks.fab(f, x, y, key=jax.random.key(0), eps=eps, norm=norm,
                                             n_iter=30, n_restarts=2))
  x_adv = run(x, y, eps)
  assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
  assert bool(jnp.all(common.norm_of(x_adv - x, norm) <= eps + 1e-6))
  np.testing.assert_array_equal(attacks.is_robust(f, x_adv, y), jnp.arange(8) % 2 == 1)


def test_same_result_for_any_batch_split():
  rng = np.random.default_rng(3)
  w1 = jnp.asarray(rng.normal(size=(16, 24)) / 4, jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(24, 5)), jnp.float32)
  f = lambda z: jnp.tanh(z.reshape(z.shape[0], -1) @ w1) @ w2
  x = jax.random.uniform(jax.random.key(0), (10, 4, 4, 1))
  y = jnp.argmax(f(x), -1)
  keys = common.example_keys(jax.random.key(5), 10)
  kw = dict(eps=0.1, norm="linf", n_iter=15, n_restarts=2, n_target_classes=3)
  whole = attacks.fab(f, x, y, key=keys, **kw)
  parts = jnp.concatenate([attacks.fab(f, x[a:b], y[a:b], key=keys[a:b], **kw)
                           for a, b in ((0, 3), (3, 10))])
  np.testing.assert_allclose(whole, parts, atol=1e-6)
  np.testing.assert_array_equal(attacks.is_robust(f, whole, y), attacks.is_robust(f, parts, y))


def test_bad_input():
  f = lambda z: z.reshape(z.shape[0], -1)[:, :3]
  with pytest.raises(UserError, match="eps"):
    attacks.fab(f, jnp.full((2, 5), 0.5), jnp.zeros(2, jnp.int32), key=jax.random.key(0), eps=0)
  with pytest.raises(UserError, match="norm"):
    attacks.fab(f, jnp.full((2, 5), 0.5), jnp.zeros(2, jnp.int32), key=jax.random.key(0), eps=0.1,
                norm="l1")
