"""Building blocks shared by the architectures: input normalization, PyTorch-equivalent conv/BN.

    norm = Normalize(mean=CIFAR10_MEAN, std=CIFAR10_STD)   # x in [0,1] -> (x - mean) / std
    conv = conv2d(16, 32, 3, stride=2, padding=1, rngs=rngs)  # PyTorch padding semantics
    bn = batch_norm(32, rngs=rngs)                          # torch's BatchNorm2d, update rule too

Every architecture applies its own `Normalize` first, so callers always pass NHWC images in
[0,1] (RobustBench convention; AutoAttack issues #13/#16).

Batch norm train/eval switching: the `BatchNorm` layers follow NNX's mode flag
``use_running_average``. ``model.train()`` makes every BN normalise with the batch statistics
and update its running statistics (the forward pass then mutates ``BatchStat`` variables, so
under ``jax.jit`` pass the model through ``nnx.split``/``nnx.merge`` or ``nnx.jit`` and keep
the returned state); ``model.eval()`` makes every BN use the running statistics and leaves the
model state untouched. The running statistics follow PyTorch's rule, not Flax's: the running
variance is updated with the unbiased batch variance (see `BatchNorm`). Fresh models from
`jax_abstain.models.create` start in train mode (NNX's default); `jax_abstain.models.load`
returns them in eval mode.
"""
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# PyTorch's BatchNorm2d defaults. Flax's momentum is the weight of the *old* running value,
# PyTorch's the weight of the new batch value, hence 1 - 0.1.
TORCH_BN_MOMENTUM = 0.9
TORCH_BN_EPS = 1e-5


class Constant(nnx.Variable):
  """A fixed array that is part of the model state but never trained (normalization stats).

  Optimizers built with ``wrt=nnx.Param`` skip it, so fine-tuning leaves the input
  normalization of a ported model exactly as the checkpoint defined it.
  """


class Normalize(nnx.Module):
  """Input normalization in front of every network.

  Modes:
    * ``"mean_std"``: ``(x - mean) / std`` per channel (identity with mean 0, std 1).
    * ``"per_image"``: per-sample standardisation as in RobustBench's Ding2020MMA wrapper:
      ``(x - mean(x)) / max(std(x), 1/sqrt(H*W*C))`` with PyTorch's unbiased std over all
      pixels of one image.

  Args:
    mean: per-channel mean, C floats (``mean_std`` mode).
    std: per-channel standard deviation, C floats (``mean_std`` mode).
    mode: ``"mean_std"`` or ``"per_image"``.

  The values always come from the constructor (the model registry); a ported checkpoint that
  stores them is checked against them, never copied (`jax_abstain.porting.mapping`).
  """

  def __init__(self, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
               *, mode: str = "mean_std"):
    if mode not in ("mean_std", "per_image"):
      raise ValueError(f"unknown normalization mode {mode!r}")
    self.mode = mode
    # Kept as plain tuples so `io.instantiate` can materialise an abstract (eval_shape) model.
    self.init_values = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
    self.mean = Constant(jnp.asarray(mean, jnp.float32))
    self.std = Constant(jnp.asarray(std, jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,H,W,C] in [0,1] to the network's input scale [B,H,W,C]."""
    if self.mode == "per_image":
      n = x.shape[1] * x.shape[2] * x.shape[3]
      mu = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
      sd = jnp.sqrt(jnp.sum((x - mu) ** 2, axis=(1, 2, 3), keepdims=True) / (n - 1))
      return (x - mu) / jnp.maximum(sd, 1.0 / n ** 0.5)
    return (x - self.mean[...]) / self.std[...]

  def describe(self) -> dict:
    """JSON-able description for manifests."""
    if self.mode == "per_image":
      return {"mode": "per_image"}
    return {"mode": "mean_std", "mean": [float(v) for v in self.mean[...]],
            "std": [float(v) for v in self.std[...]]}


def conv2d(in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding=0,
           bias: bool = False, rngs: nnx.Rngs) -> nnx.Conv:
  """A conv layer with PyTorch's padding semantics.

  Flax's ``"SAME"`` padding puts the extra row/column of a strided convolution at the bottom/
  right, while ``nn.Conv2d(padding=p)`` pads p on every side; on a stride-2 3x3 conv over a
  32x32 map the two disagree by one pixel shift. So padding is always explicit here.

  Args:
    padding: an int p (p on every side, as torch) or ((top, bottom), (left, right)).
  """
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  # Plain lax convolutions: the attacks rewrite every model's input gradients themselves
  # (`attacks.common.take_model`); a per-layer `fast_conv` made no measured difference on top
  # of that (BENCHMARKS.md, section 5: ResNet-18 with and without it).
  return nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=(stride, stride), padding=padding,
                  use_bias=bias, kernel_init=nnx.initializers.he_normal(), rngs=rngs)


def max_pool(x: jax.Array, size: int) -> jax.Array:
  """Non-overlapping max pooling (window = stride = size, no padding) of x [B,H,W,C].

  Computed as a reshape and a max over the window axes when H and W are multiples of `size`:
  the same values as `nnx.max_pool`, and a gradient XLA:CPU computes 5-7x faster than the
  select-and-scatter of `reduce_window` (every attack step differentiates through it). Where a
  window has tied maxima the gradient is shared among them instead of going to the first one;
  the value is the same.
  """
  b, h, w, c = x.shape
  if h % size or w % size:
    return nnx.max_pool(x, (size, size), strides=(size, size))
  return jnp.max(x.reshape(b, h // size, size, w // size, size, c), axis=(2, 4))


class BatchNorm(nnx.BatchNorm):
  """`nnx.BatchNorm` with PyTorch's training-mode statistics (``nn.BatchNorm1d/2d/3d``).

  Over the n = B*H*W values of a channel (all axes but the last), train mode normalises with
  the batch mean m and the biased variance v = sum((x - m)^2) / n, as Flax and PyTorch both do,
  and updates the running statistics as PyTorch does (``torch.nn.BatchNorm2d``: "the value
  stored in the moving average of the standard-deviation is calculated via the unbiased
  estimator"; tests/models_test.py compares with it):

      running_mean <- momentum * running_mean + (1 - momentum) * m
      running_var  <- momentum * running_var  + (1 - momentum) * v * n / (n - 1)

  with Flax's `momentum` (the old value's weight; PyTorch's momentum 0.1 is 0.9 here). Flax's
  own layer uses v for running_var, which shrinks it by (n - 1) / n at every step, so a ported
  model fine-tuned here and exported back would carry other statistics than PyTorch's. v is
  computed as Flax computes it by default, max(E[x^2] - m^2, 0) in float32 or wider (one
  fused pass; a two-pass variance costs about 5 % more CPU time per training step), so the
  train-mode outputs are Flax's; they differ from PyTorch's by rounding only. Eval mode is
  Flax's (running statistics, no update).

  Raises:
    ValueError: train mode with n == 1 value per channel (PyTorch's ValueError: the unbiased
      variance of one value is undefined).
  """

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *, mask=None):
    """Normalises x [..., C] over all axes but the last; see the class docstring."""
    if use_running_average is None:
      use_running_average = self.use_running_average
    if use_running_average:
      return super().__call__(x, use_running_average=True, mask=mask)
    if mask is not None or self.axis_name is not None or self.axis not in (-1, x.ndim - 1):
      raise ValueError("BatchNorm: train mode supports features on the last axis only, "
                       "without mask or axis_name")
    n = math.prod(x.shape[:-1])
    if n < 2:
      raise ValueError(f"BatchNorm: expected more than 1 value per channel in train mode, got "
                       f"input shape {tuple(x.shape)} (as torch.nn.BatchNorm)")
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(xf, axis=axes)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(xf), axis=axes) - jnp.square(mean))
    stop, m = jax.lax.stop_gradient, self.momentum
    self.mean[...] = stop(m * self.mean[...] + (1 - m) * mean)
    self.var[...] = stop(m * self.var[...] + (1 - m) * var * (n / (n - 1)))
    y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon)
    affine = [p[...] for p in (self.scale, self.bias) if p is not None]
    if self.scale is not None:
      y = y * self.scale[...]
    if self.bias is not None:
      y = y + self.bias[...]
    return y.astype(self.dtype or jnp.result_type(x, *affine))


def batch_norm(features: int, *, rngs: nnx.Rngs) -> BatchNorm:
  """``nn.BatchNorm2d(features)``: PyTorch's momentum, epsilon and running-variance rule."""
  return BatchNorm(features, momentum=TORCH_BN_MOMENTUM, epsilon=TORCH_BN_EPS, rngs=rngs)


def linear(in_features: int, out_features: int, *, bias: bool = True, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(in_features, out_features, use_bias=bias, rngs=rngs)


def activation(name: str):
  """``relu`` or ``swish`` (x * sigmoid(x), DeepMind's models)."""
  try:
    return {"relu": jax.nn.relu, "swish": jax.nn.silu}[name]
  except KeyError:
    raise ValueError(f"unknown activation {name!r}; expected relu or swish") from None


def global_avg_pool(x: jax.Array) -> jax.Array:
  """[B,H,W,C] -> [B,C]. Equals torch's ``avg_pool2d(out, k)`` + flatten when k == H == W."""
  return jnp.mean(x, axis=(1, 2))
