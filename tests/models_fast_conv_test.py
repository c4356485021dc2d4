"""fast_conv: the same values and gradients as lax.conv_general_dilated, also inside lax loops."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jax_abstain import models
from jax_abstain.models import fast_conv, layers

DN = ("NHWC", "HWIO", "NHWC")


def _both(x, k, strides, padding):
  def loss(fn):
    return lambda x, k: jnp.sum(jnp.sin(fn(x, k, strides, padding, dimension_numbers=DN)))
  ref = jax.value_and_grad(loss(lax.conv_general_dilated), argnums=(0, 1))(x, k)
  new = jax.value_and_grad(loss(fast_conv.conv_general_dilated), argnums=(0, 1))(x, k)
  return ref, new


@pytest.mark.parametrize("size,kernel,stride,pad", [
    (28, 3, 1, (0, 0)), (32, 3, 1, (1, 1)), (32, 3, 2, (1, 1)), (31, 3, 2, (1, 1)),
    (32, 1, 2, (0, 0)), (33, 1, 2, (0, 0)), (32, 7, 2, (3, 3)), (16, 3, 2, (0, 1)),
    (9, 4, 3, (2, 0))])
def test_values_and_gradients_match_lax(size, kernel, stride, pad):
  rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
  x = jnp.asarray(rng.normal(size=(2, size, size + 1, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 5)), jnp.float32)
  (v_ref, (dx_ref, dk_ref)), (v_new, (dx_new, dk_new)) = _both(x, k, (stride, stride),
                                                               (pad, pad))
  chex.assert_trees_all_close(v_new, v_ref, rtol=1e-5, atol=1e-4)
  chex.assert_shape(dx_new, x.shape)
  chex.assert_trees_all_close((dx_new, dk_new), (dx_ref, dk_ref), rtol=1e-4, atol=1e-4)


def test_unsupported_forms_fall_back_to_lax():
  x = jnp.ones((1, 8, 8, 4))
  k = jnp.ones((3, 3, 2, 4))
  grouped = fast_conv.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN,
                                           feature_group_count=2)
  chex.assert_trees_all_close(grouped, lax.conv_general_dilated(
      x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN, feature_group_count=2))
  same = fast_conv.conv_general_dilated(x, jnp.ones((3, 3, 4, 4)), (1, 1), "SAME",
                                        dimension_numbers=DN)
  chex.assert_shape(same, (1, 8, 8, 4))


def test_input_gradient_inside_a_loop_equals_the_host_loop():
  """The attack pattern: sign-gradient steps in lax.fori_loop, on a registry model."""
  net = models.create("resnet18", num_classes=10)
  net.eval()
  graphdef, state = nnx.split(net)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32)

  def grad(z):
    merged = nnx.merge(graphdef, state)
    return jax.grad(lambda u: jnp.sum(jax.nn.log_softmax(merged(u))[:, 0]))(z)

  step = lambda _, z: jnp.clip(z + 0.01 * jnp.sign(grad(z)), 0, 1)
  in_loop = jax.jit(lambda z: lax.fori_loop(0, 2, step, z))(x)
  by_hand = step(1, step(0, x))
  chex.assert_trees_all_close(in_loop, by_hand, atol=1e-6)


def test_max_pool_matches_flax_values_and_falls_back_on_odd_sizes():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 8, 6, 3)), jnp.float32)
  chex.assert_trees_all_close(layers.max_pool(x, 2), nnx.max_pool(x, (2, 2), strides=(2, 2)))
  odd = jnp.asarray(rng.normal(size=(1, 7, 7, 2)), jnp.float32)
  chex.assert_trees_all_close(layers.max_pool(odd, 2), nnx.max_pool(odd, (2, 2), strides=(2, 2)))
  # Without ties the gradient goes to the same (unique) maximum as select-and-scatter.
  g_new = jax.grad(lambda z: jnp.sum(layers.max_pool(z, 2) ** 2))(x)
  g_ref = jax.grad(lambda z: jnp.sum(nnx.max_pool(z, (2, 2), strides=(2, 2)) ** 2))(x)
  chex.assert_trees_all_close(g_new, g_ref)


def _cnn_params(layout, seed=0):
  rng = np.random.default_rng(seed)
  k1 = rng.normal(size=(3, 3, 1, 4)).astype(np.float32) / 3
  k2 = rng.normal(size=(3, 3, 4, 6)).astype(np.float32) / 6
  w = rng.normal(size=(6 * 3 * 3, 5)).astype(np.float32) / 8
  if layout == "NCHW":
    k1, k2 = k1.transpose(3, 2, 0, 1), k2.transpose(3, 2, 0, 1)
  return jnp.asarray(k1), jnp.asarray(k2), jnp.asarray(w)


def user_cnn(layout):
  """A user's own model as a plain function: two 3x3 convs (one strided), ReLU, 2x2 max-pool."""
  k1, k2, w = _cnn_params(layout)
  dn = (layout, "OIHW" if layout == "NCHW" else "HWIO", layout)
  win = (1, 1, 2, 2) if layout == "NCHW" else (1, 2, 2, 1)

  def f(x):
    h = jnp.transpose(x, (0, 3, 1, 2)) if layout == "NCHW" else x
    h = jax.nn.relu(lax.conv_general_dilated(h, k1, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn))
    h = jax.nn.relu(lax.conv_general_dilated(h, k2, (2, 2), ((1, 0), (1, 0)), dimension_numbers=dn))
    h = lax.reduce_window(h, -jnp.inf, lax.max, win, win, "VALID")
    h = jnp.transpose(h, (0, 2, 3, 1)) if layout == "NCHW" else h
    return h.reshape(h.shape[0], -1) @ w
  return f


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_fast_input_grads_same_values_and_gradients_in_and_out_of_loops(layout):
  """Catches a wrong transposed kernel, padding or layout permutation in the rewritten conv,
  and a max-pool gradient sent to the wrong element of its window."""
  f = user_cnn(layout)
  fast = fast_conv.fast_input_grads(f)
  x = jnp.asarray(np.random.default_rng(2).uniform(size=(3, 12, 12, 1)), jnp.float32)
  loss = lambda fn: lambda z: jnp.sum(jnp.sin(fn(z)))
  chex.assert_trees_all_close(fast(x), f(x), rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(jax.grad(loss(fast))(x), jax.grad(loss(f))(x), rtol=1e-4,
                              atol=1e-5)
  # Inside a jitted fori_loop (the attack pattern), with a nested jit around the model.
  step = lambda fn: lambda _, z: jnp.clip(z + 0.01 * jnp.sign(jax.grad(loss(fn))(z)), 0, 1)
  in_loop = jax.jit(lambda z: lax.fori_loop(0, 3, step(fast_conv.fast_input_grads(jax.jit(f))), z))
  chex.assert_trees_all_close(in_loop(x), lax.fori_loop(0, 3, step(f), x), atol=1e-6)
  assert str(jax.make_jaxpr(fast)(x)).count("custom_vjp_call") == 3   # 2 convs, 1 pool
  assert "select_and_scatter" not in str(jax.make_jaxpr(jax.grad(loss(fast)))(x))


def test_max_pool_gradient_goes_to_the_first_maximum_like_select_and_scatter():
  """Tied maxima: autodiff's select-and-scatter picks the first; a shared gradient would not."""
  x = jnp.array([[[[1.0], [1.0]], [[0.5], [1.0]]]])   # [1, 2, 2, 1], three tied maxima
  pool = lambda z: lax.reduce_window(z, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  g_ref = jax.grad(lambda z: jnp.sum(pool(z)))(x)
  g_new = jax.grad(lambda z: jnp.sum(fast_conv.fast_input_grads(pool)(z)))(x)
  chex.assert_trees_all_equal(g_new, g_ref)
  np.testing.assert_array_equal(np.ravel(g_new), [1.0, 0.0, 0.0, 0.0])


def test_flax_linen_and_nnx_convs_are_rewritten():
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  x = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 8, 8, 3)), jnp.float32)
  lin = nn.Conv(4, (3, 3), strides=(2, 2))
  params = lin.init(jax.random.key(0), x)
  nnx_conv = nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0))
  for fn in (lambda z: lin.apply(params, z), nnx_conv):
    fast = fast_conv.fast_input_grads(fn)
    assert "custom_vjp_call" in str(jax.make_jaxpr(fast)(x))
    chex.assert_trees_all_close(jax.grad(lambda z: jnp.sum(fast(z) ** 2))(x),
                                jax.grad(lambda z: jnp.sum(fn(z) ** 2))(x), rtol=1e-4, atol=1e-5)
