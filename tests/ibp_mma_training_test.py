"""The IBP (Gowal et al. 2018) and MMA (Ding et al. 2020) training objectives: the eps/kappa
ramp, the loss values on a hand-computed network, and MMA's margin search on a linear model
whose Linf distance to the boundary is known in closed form."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from jax_abstain.errors import UserError
from jax_abstain.training import objectives, step
from jax_abstain.training.config import TrainConfig


def _batch(fn, x, y, scale=1.0, **cfg):
  keys = jax.random.split(jax.random.key(0), x.shape[0])
  return objectives.Batch(cfg=TrainConfig.from_config(cfg), x=x, y=y, keys=(keys, keys),
                          beta=jnp.float32(1.0), scale=jnp.float32(scale), rest={},
                          forward=lambda xa, r: (fn(xa), r), attack_logits=fn)


def _two_layer(x):
  w1, b1 = jnp.array([[1.0, -2.0], [3.0, 1.0]]), jnp.array([-0.5, 0.5])
  w2, b2 = jnp.array([[1.0, -1.0], [2.0, 1.0]]), jnp.array([0.0, 0.1])
  return jax.nn.relu(x @ w1 + b1) @ w2 + b2


def _ce(logits, y):
  return logsumexp(logits) - logits[y]


def test_ibp_ramp_follows_gowal_schedule():
  # 10 epochs of 30 steps: warm-up 1/30 (10 steps) at 0, then linear to 1 over 1/6 (50 steps).
  cfg = TrainConfig.from_config({"loss": "ibp", "epochs": 10})
  got = [step.loss_scale(cfg, s, 30) for s in (0, 10, 35, 60, 299)]
  np.testing.assert_allclose(got, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-9)
  # other losses keep the epoch's beta factor
  era = TrainConfig.from_config({"loss": "era", "beta_decay_every": 2})
  assert step.loss_scale(era, 65, 30) == pytest.approx(0.1)


def test_ibp_loss_by_hand():
  # Logits at x = (0.5, 0.2): (0.6, -0.5); bounds over eps 0.1: lo (0.2, -0.9), hi (1.0,
  # -0.1) (tests/ibp_test.py), so z_hat for y = 0 is (0.2, -0.1). kappa = 0.5 at full ramp.
  x, y = jnp.array([[0.5, 0.2]]), jnp.array([0])
  per, nat, _ = objectives.ibp(_batch(_two_layer, x, y, scale=1.0, loss="ibp", eps=0.1))
  want = 0.5 * _ce(np.array([0.6, -0.5]), 0) + 0.5 * _ce(np.array([0.2, -0.1]), 0)
  np.testing.assert_allclose(per, [want], rtol=1e-5)
  np.testing.assert_allclose(nat, [[0.6, -0.5]], atol=1e-6)
  # half-way up the ramp: eps 0.05 (h1 in [0.4, 0.8], h2 in [-0.45, -0.15] -> 0, so o1 in
  # [0.4, 0.8], o2 in [-0.7, -0.3]), kappa 0.75
  per, _, _ = objectives.ibp(_batch(_two_layer, x, y, scale=0.5, loss="ibp", eps=0.1))
  want = 0.75 * _ce(np.array([0.6, -0.5]), 0) + 0.25 * _ce(np.array([0.4, -0.3]), 0)
  np.testing.assert_allclose(per, [want], rtol=1e-5)
  with pytest.raises(UserError, match="bn_mode_loss"):
    TrainConfig.from_config({"loss": "ibp", "bn_mode_loss": "train"})


W, B = np.array([0.8, -0.5, 0.3, -0.2]), -0.3


def _linear(x):
  """Two classes: logits (w.x + b, 0); class 0 while w.x + b > 0."""
  z = x @ jnp.asarray(W, jnp.float32) + B
  return jnp.stack([z, jnp.zeros_like(z)], -1)


def test_soft_logit_margin_against_scipy():
  logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.3, -2.0]], np.float32)
  y = np.array([0, 2])
  got = objectives._soft_logit_margin(jnp.asarray(logits), jnp.asarray(y))
  want = [logsumexp(np.delete(l, t)) - l[t] for l, t in zip(logits, y)]
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mma_margin_is_the_linf_distance_to_the_boundary():
  # Linf distance of x to {w.x + b = 0}: (w.x + b) / ||w||_1 (the corner -sign(w) reaches it).
  x = jnp.array([[0.6, 0.4, 0.5, 0.5], [0.7, 0.3, 0.5, 0.5], [0.2, 0.6, 0.5, 0.5]])
  y = jnp.array([0, 0, 0])
  b = _batch(_linear, x, y, loss="mma", eps=0.3, attack_steps=20)
  x_m, d = objectives._shortest_perturbation(b)
  dist = (np.asarray(x) @ W + B) / np.abs(W).sum()     # 0.017, 0.089, < 0 (misclassified)
  radius = 1.05 * 0.3
  np.testing.assert_allclose(d[:2], dist[:2], atol=radius / 2 ** 9)
  np.testing.assert_allclose(x_m[:2], np.asarray(x[:2]) - dist[:2, None] * np.sign(W),
                             atol=radius / 2 ** 9)
  per, _, _ = objectives.mma(b)
  nat = np.asarray(_linear(x))
  at_margin = np.asarray(_linear(x_m))
  # correct and d < d_max: 1/3 CE(x) + 2/3 CE(x + d u); misclassified: CE(x) (1/3 + 2/3).
  want = [_ce(nat[i], 0) / 3 + 2 / 3 * _ce(at_margin[i], 0) for i in (0, 1)] + [_ce(nat[2], 0)]
  np.testing.assert_allclose(per, want, rtol=1e-5)


def test_mma_ignores_margins_beyond_d_max():
  # d = 0.16 / 1.8 = 0.089 > d_max 0.05: only the clean third is left (the authors' hinge).
  x, y = jnp.array([[0.7, 0.3, 0.5, 0.5]]), jnp.array([0])
  per, _, _ = objectives.mma(_batch(_linear, x, y, loss="mma", eps=0.05, attack_steps=20))
  np.testing.assert_allclose(per, [_ce(np.asarray(_linear(x))[0], 0) / 3], rtol=1e-5)
