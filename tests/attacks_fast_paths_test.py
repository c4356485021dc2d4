"""The fast paths give the same adversarial points as the plain paths on a fixed model.

Fast paths: the loop-friendly convolution and max-pool gradients that the attacks apply to any
model on CPU (`models.fast_conv.fast_input_grads`, off with JAX_ABSTAIN_PLAIN_GRADIENTS=1), and
AutoAttack's compaction of the survivors into power-of-two buckets (against the jitted run,
which attacks the whole batch with masks).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_abstain import attacks
from jax_abstain.models import fast_conv
from models_fast_conv_test import user_cnn


def _inputs(n=12, seed=0):
  x = jnp.asarray(np.random.default_rng(seed).uniform(size=(n, 12, 12, 1)), jnp.float32)
  return x


@pytest.mark.parametrize("layout", ["NCHW", pytest.param("NHWC", marks=pytest.mark.slow)])
def test_apgd_fast_and_plain_gradients_give_the_same_points(layout, monkeypatch):
  """Would catch a rewritten gradient that differs beyond float rounding (a wrong kernel
  flip, a max-pool gradient on another element): the sign steps would diverge."""
  f = user_cnn(layout)
  x = _inputs()
  y = jnp.argmax(f(x), -1)
  kw = dict(key=jax.random.key(0), eps=0.05, n_iter=10)
  assert fast_conv.applies()
  fast = attacks.apgd_run(f, x, y, **kw)
  monkeypatch.setenv(fast_conv.PLAIN_ENV, "1")
  assert not fast_conv.applies()
  plain = attacks.apgd_run(f, x, y, **kw)
  np.testing.assert_array_equal(fast.robust, plain.robust)
  np.testing.assert_allclose(fast.x_adv, plain.x_adv, atol=1e-6)
  assert 0 < int(plain.robust.sum()) < x.shape[0]   # the attack broke some, not all


@pytest.mark.slow
def test_autoattack_buckets_and_fast_gradients_give_the_plain_jitted_result(monkeypatch):
  f = user_cnn("NCHW")
  x = _inputs(10, seed=1)
  y = jnp.argmax(f(x), -1)
  kw = dict(key=jax.random.key(2), eps=0.05, n_iter=5, n_queries=30, n_target_classes=3)
  fast = attacks.autoattack_run(f, x, y, **kw)
  monkeypatch.setenv(fast_conv.PLAIN_ENV, "1")
  plain = jax.jit(lambda x, y: attacks.autoattack_run(f, x, y, **kw))(x, y)
  np.testing.assert_array_equal(fast.broken_by, plain.broken_by)
  np.testing.assert_allclose(fast.x_adv, plain.x_adv, atol=1e-6)
  assert len(set(np.asarray(plain.broken_by).tolist())) >= 2
