"""DeepMind's pre-activation ResNet-18/34 (Rebuffi et al. 2021, Gowal et al. 2021) with Swish
and built-in normalization, as RobustBench's ``DMPreActResNet`` (`dm_wide_resnet.py`).

    net = DMPreActResNet(depth=18, num_classes=10, activation="swish", rngs=nnx.Rngs(0))
    net.eval()
    logits = net(x)      # x: [B,32,32,3] in [0,1] -> [B,10]

As in DeepMind's code: every 3x3 conv that may stride pads explicitly before a padding-0 conv
((1,1) at stride 1, (0,1) at stride 2, TensorFlow ``SAME``), and the projection shortcut is a
*3x3* conv of the block's raw (not activated) input, padded the same way. The normalization
mean/std are RobustBench's non-persistent buffers, absent from its files, so they come from
the registry. Attribute names mirror the PyTorch module (``layer_0.0.batchnorm_0``,
``conv_2d_1``, ``shortcut``, ``logits``).
"""
from typing import Sequence

import jax
from flax import nnx

from jax_abstain.models import layers

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _same(stride: int):
  """DeepMind's explicit padding before a padding-0 3x3 conv (TensorFlow ``SAME``)."""
  if stride not in (1, 2):
    raise ValueError(f"unsupported stride {stride}")
  return ((1, 1), (1, 1)) if stride == 1 else ((0, 1), (0, 1))


class PreActBlock(nnx.Module):
  """BN-act-conv3x3(stride)-BN-act-conv3x3 + (identity | conv3x3(stride) of the raw input)."""

  def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str, *,
               rngs: nnx.Rngs):
    pad = _same(stride)
    self.activation = activation
    self.batchnorm_0 = layers.batch_norm(in_planes, rngs=rngs)
    self.conv_2d_1 = layers.conv2d(in_planes, out_planes, 3, stride=stride, padding=pad,
                                   rngs=rngs)
    self.batchnorm_1 = layers.batch_norm(out_planes, rngs=rngs)
    self.conv_2d_2 = layers.conv2d(out_planes, out_planes, 3, stride=1, padding=1, rngs=rngs)
    self.has_shortcut = stride != 1 or in_planes != out_planes
    self.shortcut = (layers.conv2d(in_planes, out_planes, 3, stride=stride, padding=pad,
                                   rngs=rngs)
                     if self.has_shortcut else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    f = layers.activation(self.activation)
    out = f(self.batchnorm_0(x))
    shortcut = self.shortcut(x) if self.has_shortcut else x
    out = self.conv_2d_2(f(self.batchnorm_1(self.conv_2d_1(out))))
    return out + shortcut


class DMPreActResNet(nnx.Module):
  """DeepMind PreAct ResNet-depth (18 or 34) for 32x32 inputs.

  Args:
    num_classes: output classes.
    depth: 18 (blocks 2,2,2,2) or 34 (3,4,6,3).
    activation: ``"swish"`` (the RobustBench models) or ``"relu"``.
    mean, std: per-channel normalization (the registry entry's).
    padding: zero padding around the input before normalization (0 for every CIFAR model).
  """

  def __init__(self, num_classes: int = 10, depth: int = 18, *, activation: str = "swish",
               mean: Sequence[float] = layers.CIFAR10_MEAN,
               std: Sequence[float] = layers.CIFAR10_STD, padding: int = 0, rngs: nnx.Rngs):
    if depth not in BLOCKS:
      raise ValueError(f"DMPreActResNet depth must be 18 or 34, got {depth}")
    self.padding = padding
    self.activation = activation
    self.normalize = layers.Normalize(mean, std)
    self.conv_2d = layers.conv2d(3, 64, 3, stride=1, padding=1, rngs=rngs)
    widths = (64, 64, 128, 256, 512)
    for i, n in enumerate(BLOCKS[depth]):
      setattr(self, f"layer_{i}", nnx.List([
          PreActBlock(widths[i] if j == 0 else widths[i + 1], widths[i + 1],
                      (1 if i == 0 else 2) if j == 0 else 1, activation, rngs=rngs)
          for j in range(n)]))
    self.batchnorm = layers.batch_norm(512, rngs=rngs)
    self.logits = layers.linear(512, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,32,32,3] in [0,1] to logits [B,num_classes]."""
    if self.padding:
      p = self.padding
      x = jax.numpy.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = self.conv_2d(self.normalize(x))
    for stage in (self.layer_0, self.layer_1, self.layer_2, self.layer_3):
      for block in stage:
        out = block(out)
    out = layers.activation(self.activation)(self.batchnorm(out))
    return self.logits(layers.global_avg_pool(out))
