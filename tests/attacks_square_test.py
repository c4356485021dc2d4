"""Square Attack: its schedule, the ball/box contract, closing in on a linear model's minimal
perturbation without gradients, and batch independence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_abstain import attacks
from jax_abstain.attacks import common
from jax_abstain.attacks.square import (meta_pseudo_gaussian, p_selection, square_run,
                                        window_schedule)
from jax_abstain.errors import UserError


def _official_square(n_queries, rescale):
  """AutoAttack's own SquareAttack (pyautoattack), only for its schedule."""
  pytest.importorskip("torch")
  square_mod = pytest.importorskip("pyautoattack.square")
  return square_mod.SquareAttack(None, n_queries=n_queries, eps=0.1, p_init=0.8,
                                 resc_schedule=rescale)


@pytest.mark.parametrize("n_queries", [5000, 10000, 300])
def test_schedule_follows_autoattack(n_queries):
  # AutoAttack builds Square with resc_schedule=False: p on the raw query index, whatever the
  # budget. The rescaled schedule stays available as an option and matches resc_schedule=True.
  for rescale in (False, True):
    official = _official_square(n_queries, rescale)
    ours = [p_selection(it, n_queries, 0.8, rescale) for it in range(n_queries)]
    np.testing.assert_array_equal(ours, [official.p_selection(it) for it in range(n_queries)])
    # The window sides (AutoAttack's attack_single_run): Linf s = max(round(sqrt(p n / c)), 1),
    # L2 at least 3 and odd, both capped by the image side.
    for norm in ("linf", "l2"):
      sides = np.zeros(n_queries, int)
      for start, stop, (sh, sw) in window_schedule(n_queries, 0.8, 32, 32, 3, norm, rescale):
        assert sh == sw
        sides[start:stop] = sh
      for it in range(n_queries):
        s = int(round(np.sqrt(official.p_selection(it) * 32 * 32 * 3 / 3)))
        s = max(s, 1) if norm == "linf" else max(s, 3) + (max(s, 3) % 2 == 0)
        assert sides[it] == min(s, 32), (norm, rescale, it)
  if n_queries == 5000:  # the example: p halves after query 10 (not 5), 3x3 at 4,001
    phases = window_schedule(5000, 0.8, 32, 32, 3, "linf")
    assert phases[0][:2] == (0, 11) and phases[-1] == (4001, 5000, (3, 3))


def test_l2_window_profile_is_a_unit_norm_bump_pair():
  for s in (3, 5, 8):
    p = meta_pseudo_gaussian(s, s)
    np.testing.assert_allclose((p ** 2).sum(), 1.0, rtol=1e-5)
    assert np.all(p[:s // 2] > 0) and np.all(p[s // 2:] < 0), p
    # The positive half peaks in its middle column.
    assert np.unravel_index(np.argmax(p), p.shape)[1] == s // 2


def _images_linear(seed=0, n=8, c=3):
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(6 * 6 * 1, c)), jnp.float32)
  b = -0.5 * w.sum(0)
  f = lambda z: z.reshape(z.shape[0], -1) @ w + b
  x = jnp.asarray(rng.uniform(0.4, 0.6, size=(n, 6, 6, 1)), jnp.float32)
  y = jnp.argmax(f(x), -1)
  m = jnp.take_along_axis(f(x), y[:, None], -1) - f(x)
  dw = w[:, y].T[:, :, None] - w[None]
  other = jnp.arange(c)[None] != y[:, None]
  d_linf = jnp.where(other, m / jnp.abs(dw).sum(1), jnp.inf).min(-1)
  d_l2 = jnp.where(other, m / jnp.sqrt((dw ** 2).sum(1)), jnp.inf).min(-1)
  return f, x, y, {"linf": d_linf, "l2": d_l2}


@pytest.mark.parametrize("norm,slack,n_queries", [("linf", 1.1, 1500), ("l2", 1.5, 1000)])
def test_gets_close_to_the_minimal_perturbation(norm, slack, n_queries):
  # Random search with structured windows cannot match the dense optimal L2 direction
  # exactly; on this 36-pixel problem it plateaus at about 1.2-1.4x the minimal norm.
  f, x, y, dist = _images_linear()
  run = jax.jit(lambda x, y, eps: square_run(f, x, y, key=jax.random.key(0), eps=eps, norm=norm,
                                             n_queries=n_queries))
  res = run(x, y, dist[norm] * slack)
  assert not bool(res.robust.any()), (norm, res.robust)
  np.testing.assert_array_equal(res.robust, attacks.is_robust(f, res.x_adv, y))
  below = run(x, y, dist[norm] * 0.98)
  assert bool(below.robust.all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_ball_and_box_on_images_and_vectors(norm):
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(48, 4)), jnp.float32)
  f = lambda z: z.reshape(z.shape[0], -1) @ w
  for shape in ((5, 4, 4, 3), (5, 48)):
    x = jnp.asarray(rng.uniform(0, 1, size=shape), jnp.float32)
    x = x.at[0].set(0.0).at[1].set(1.0)
    y = jnp.argmax(f(x), -1)
    eps = 0.05 if norm == "linf" else 0.5
    x_adv = attacks.square(f, x, y, key=jax.random.key(0), eps=eps, norm=norm, n_queries=40)
    assert x_adv.shape == x.shape
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(jnp.max(common.norm_of(x_adv - x, norm))) <= eps + 1e-6


def test_same_result_for_any_batch_split():
  f, x, y, dist = _images_linear(seed=2, n=10)
  keys = common.example_keys(jax.random.key(3), 10)
  kw = dict(eps=0.04, norm="linf", n_queries=60)
  whole = square_run(f, x, y, key=keys, **kw)
  parts = [square_run(f, x[a:b], y[a:b], key=keys[a:b], **kw) for a, b in ((0, 4), (4, 10))]
  np.testing.assert_allclose(whole.x_adv, jnp.concatenate([p.x_adv for p in parts]), atol=1e-6)
  np.testing.assert_array_equal(whole.n_queries, jnp.concatenate([p.n_queries for p in parts]))


def test_bad_input():
  f = lambda z: z.reshape(z.shape[0], -1)[:, :3]
  with pytest.raises(UserError, match="eps"):
    attacks.square(f, jnp.full((2, 4, 4, 1), 0.5), jnp.zeros(2, jnp.int32), key=jax.random.key(0),
                   eps=-0.1)
  with pytest.raises(UserError, match=r"\[B, H, W, C\]"):
    attacks.square(f, jnp.full((2, 4, 4), 0.5), jnp.zeros(2, jnp.int32), key=jax.random.key(0),
                   eps=0.1)
