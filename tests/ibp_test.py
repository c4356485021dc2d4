"""Interval bound propagation (`jax_abstain.ibp`): hand-computed bounds of a two-layer network,
and soundness by sampling on every layer type of the model zoo (no point sampled in the ball
leaves the bounds), for Linf boxes and L2 balls."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_abstain import ibp, models
from jax_abstain.errors import UserError
from jax_abstain.models import layers


def _two_layer():
  """x [B, 2] -> relu(x W1 + b1) W2 + b2 with the weights of the hand calculation."""
  w1, b1 = jnp.array([[1.0, -2.0], [3.0, 1.0]]), jnp.array([-0.5, 0.5])
  w2, b2 = jnp.array([[1.0, -1.0], [2.0, 1.0]]), jnp.array([0.0, 0.1])
  return lambda x: jax.nn.relu(x @ w1 + b1) @ w2 + b2


def test_two_layer_network_by_hand_linf():
  # x = (0.5, 0.2), eps 0.1: x1 in [0.4, 0.6], x2 in [0.1, 0.3].
  # h1 = x1 + 3 x2 - 0.5 in [0.2, 1.0]; h2 = -2 x1 + x2 + 0.5 in [-0.6, 0.0] -> relu [0, 0].
  # o1 = h1 + 2 h2 in [0.2, 1.0]; o2 = -h1 + h2 + 0.1 in [-0.9, -0.1].
  lo, hi = ibp.bounds(_two_layer(), jnp.array([[0.5, 0.2]]), 0.1)
  np.testing.assert_allclose(lo, [[0.2, -0.9]], atol=1e-6)
  np.testing.assert_allclose(hi, [[1.0, -0.1]], atol=1e-6)
  # margin for class 0: lo_0 - hi_1 = 0.2 + 0.1 = 0.3 > 0: certified.
  np.testing.assert_allclose(ibp.margin_lower_bound(lo, hi, jnp.array([0])), [0.3], atol=1e-6)
  assert bool(ibp.certified(_two_layer(), jnp.array([[0.5, 0.2]]), 0.1)[0])
  np.testing.assert_allclose(ibp.worst_case_logits(lo, hi, jnp.array([0])), [[0.2, -0.1]],
                             atol=1e-6)


def test_two_layer_network_by_hand_l2_and_clipping():
  # L2 eps 0.1: h1 = 0.6 +- 0.1 sqrt(1 + 9), h2 = -0.3 +- 0.1 sqrt(4 + 1) (< 0 -> relu 0).
  r1 = 0.1 * np.sqrt(10.0)
  lo, hi = ibp.bounds(_two_layer(), jnp.array([[0.5, 0.2]]), 0.1, norm="l2")
  np.testing.assert_allclose(lo, [[0.6 - r1, -0.6 - r1 + 0.1]], atol=1e-6)
  np.testing.assert_allclose(hi, [[0.6 + r1, -0.6 + r1 + 0.1]], atol=1e-6)
  # Linf box clipped to [0, 1]: x = (0.05, 0.2), eps 0.1 -> x1 in [0, 0.15], x2 in [0.1, 0.3];
  # h1 = x1 + 3 x2 - 0.5 in [-0.2, 0.55] -> relu [0, 0.55]; h2 = -2 x1 + x2 + 0.5 in [0.3, 0.8].
  lo, hi = ibp.bounds(_two_layer(), jnp.array([[0.05, 0.2]]), 0.1)
  np.testing.assert_allclose(lo, [[0.6, -0.55 + 0.3 + 0.1]], atol=1e-6)
  np.testing.assert_allclose(hi, [[0.55 + 1.6, 0.8 + 0.1]], atol=1e-6)


def _samples(x, eps, norm, n, key):
  """n points of the ball around x [1, ...]: corners and uniform points (Linf, clipped to
  [0, 1]) or points on and inside the sphere (L2)."""
  k1, k2, k3 = jax.random.split(key, 3)
  shape = (n,) + x.shape[1:]
  if norm == "linf":
    corners = eps * jax.random.rademacher(k1, (n // 2,) + x.shape[1:], jnp.float32)
    inside = jax.random.uniform(k2, (n - n // 2,) + x.shape[1:], minval=-eps, maxval=eps)
    return jnp.clip(x + jnp.concatenate([corners, inside]), 0.0, 1.0)
  d = jax.random.normal(k1, shape)
  d = d / jnp.sqrt(jnp.sum(d ** 2, axis=tuple(range(1, d.ndim)), keepdims=True))
  scale = jnp.concatenate([jnp.ones(n // 2), jax.random.uniform(k3, (n - n // 2,))])
  return x + eps * d * scale.reshape((-1,) + (1,) * (x.ndim - 1))


def _check_sound(fn, x, eps, norm="linf", n=64, seed=0):
  bounds = jax.jit(lambda xx, e: ibp.bounds(fn, xx, e, norm=norm))
  lo, hi = bounds(x, eps)
  out = jax.jit(lambda xx: fn(xx))(_samples(x, eps, norm, n, jax.random.key(seed)))
  tol = 1e-4 * (1.0 + jnp.max(jnp.abs(out)))
  assert bool(jnp.all(jnp.isfinite(lo)) and jnp.all(jnp.isfinite(hi)))
  assert bool(jnp.all(out >= lo - tol)), float(jnp.min(out - lo))
  assert bool(jnp.all(out <= hi + tol)), float(jnp.max(out - hi))
  # eps = 0: the bounds are the network's values (catches bounds that are merely wide).
  lo0, hi0 = bounds(x, 0.0)
  np.testing.assert_allclose(lo0, fn(x), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(hi0, fn(x), rtol=1e-4, atol=1e-4)
  return lo, hi


def _random_batch_stats(model, seed=1):
  """Non-trivial running statistics and affine parameters for every BatchNorm (eval mode), and
  random weights for zero-initialised layers (the small CNN's last layer)."""
  rng = np.random.default_rng(seed)
  for _, p in nnx.iter_graph(model):
    if isinstance(p, nnx.Param) and not np.any(np.asarray(p[...])):
      p[...] = jnp.asarray(rng.normal(0, 0.1, p[...].shape), jnp.float32)
  for _, m in nnx.iter_modules(model):
    if isinstance(m, nnx.BatchNorm):
      c = m.mean[...].shape
      m.mean[...] = jnp.asarray(rng.normal(0, 0.2, c), jnp.float32)
      m.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)
      m.scale[...] = jnp.asarray(rng.normal(0, 1.0, c), jnp.float32)   # negative scales too
      m.bias[...] = jnp.asarray(rng.normal(0, 0.2, c), jnp.float32)
  model.eval()
  return model


class _Layers(nnx.Module):
  """One of each layer type on a [B, 8, 8, 2] input (the zoo's convs, BN, pooling, residual)."""

  def __init__(self, kind, rngs):
    self.kind = kind
    self.conv_s2 = layers.conv2d(2, 4, 3, stride=2, padding=1, bias=True, rngs=rngs)
    self.conv_asym = layers.conv2d(2, 2, 3, padding=((0, 1), (1, 0)), rngs=rngs)
    self.conv_valid = layers.conv2d(2, 2, 3, rngs=rngs)
    self.conv_same = layers.conv2d(2, 2, 3, padding=1, rngs=rngs)
    self.bn = layers.batch_norm(2, rngs=rngs)
    self.norm = layers.Normalize((0.3, 0.6), (0.2, 0.5))
    self.per_image = layers.Normalize(mode="per_image")
    self.dense = layers.linear(2 * 8 * 8, 3, rngs=rngs)

  def __call__(self, x):
    k = self.kind
    if k == "dense":
      return self.dense(x.reshape(x.shape[0], -1))
    if k == "normalize":
      h = self.norm(x)
    elif k == "per_image":
      h = self.per_image(x)
    elif k == "conv_stride2":
      return self.conv_s2(x).reshape(x.shape[0], -1)
    elif k == "conv_asymmetric_padding":
      return self.conv_asym(x).reshape(x.shape[0], -1)
    elif k == "conv_valid":
      return self.conv_valid(x).reshape(x.shape[0], -1)
    elif k == "batchnorm_relu":
      h = jax.nn.relu(self.bn(self.conv_same(x)))
    elif k == "swish":
      h = jax.nn.silu(self.conv_same(x))
    elif k == "residual":
      h = x + self.conv_same(jax.nn.relu(self.bn(x)))
    elif k == "max_pool":
      return layers.max_pool(self.conv_same(x), 2).reshape(x.shape[0], -1)
    elif k == "max_pool_window":   # 8 is no multiple of 3: nnx.max_pool (reduce_window)
      return layers.max_pool(self.conv_same(x), 3).reshape(x.shape[0], -1)
    elif k == "avg_pool":
      return nnx.avg_pool(self.conv_same(x), (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)
    elif k == "global_avg_pool":
      return layers.global_avg_pool(self.conv_same(x))
    return self.dense(h.reshape(x.shape[0], -1))


LAYER_KINDS = ("dense", "normalize", "per_image", "conv_stride2", "conv_asymmetric_padding",
               "conv_valid", "batchnorm_relu", "swish", "residual", "max_pool",
               "max_pool_window", "avg_pool", "global_avg_pool")


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_sound_on_every_layer_type(kind, norm):
  model = _random_batch_stats(_Layers(kind, nnx.Rngs(0)))
  x = jax.random.uniform(jax.random.key(3), (1, 8, 8, 2))
  _check_sound(model, x, 0.05 if norm == "linf" else 0.3, norm=norm, n=256)


_SLOW = pytest.mark.slow   # the same layer types as the fast entries, in bigger networks
ZOO = (("small-cnn", {}, (28, 28, 1)), ("dm-wrn-10-1", {}, (32, 32, 3)),
       ("cifar-resnet20", {}, (32, 32, 3)),
       ("wrn-10-1", {"normalization": "per_image"}, (32, 32, 3)),
       pytest.param("wrn-10-1", {}, (32, 32, 3), marks=_SLOW),
       pytest.param("preact-resnet18", {}, (32, 32, 3), marks=_SLOW),
       pytest.param("resnet18", {}, (32, 32, 3), marks=_SLOW))


@pytest.mark.parametrize("name,options,shape", ZOO)
def test_sound_on_the_zoo(name, options, shape):
  model = _random_batch_stats(models.create(name, **options))
  x = jax.random.uniform(jax.random.key(4), (1, *shape))
  lo, hi = _check_sound(model, x, 1 / 255, n=32)
  assert bool(jnp.all(hi - lo > 0))   # the ball is not a point: the bounds have width


def test_jit_and_per_example_radii_agree():
  model = _random_batch_stats(models.create("small-cnn"))
  x = jax.random.uniform(jax.random.key(5), (3, 28, 28, 1))
  eps = jnp.array([0.0, 0.01, 0.02])
  jitted = jax.jit(lambda xx, e: ibp.bounds(model, xx, e))(x, eps)
  for i in range(3):
    lo, hi = ibp.bounds(model, x[i:i + 1], float(eps[i]))
    np.testing.assert_allclose(jitted.lo[i:i + 1], lo, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jitted.hi[i:i + 1], hi, rtol=1e-5, atol=1e-5)


def test_unsupported_operation_is_one_line_error():
  with pytest.raises(UserError, match="no rule for the primitive 'sort'"):
    ibp.bounds(lambda x: jnp.sort(x, axis=-1), jnp.zeros((1, 3)), 0.1)
  with pytest.raises(UserError, match="per-example radii"):
    ibp.bounds(_two_layer(), jnp.zeros((2, 2)), jnp.array([0.1, 0.2]), norm="l2")
