"""DeepMind's WideResNet (Gowal et al. 2020, Rebuffi et al. 2021) with Swish and built-in
normalization, as in RobustBench's `dm_wide_resnet.py`.

    net = DMWideResNet(depth=28, width=10, num_classes=10, activation="swish",
                       mean=CIFAR10_MEAN, std=CIFAR10_STD, rngs=nnx.Rngs(0))
    net.eval()
    logits = net(x)      # x: [B,32,32,3] in [0,1] -> [B,10]

Differences from the TRADES WideResNet that matter for equal logits: the strided conv pads
(0,1) on each spatial axis (TensorFlow ``SAME``), not (1,1); the normalization mean/std are
RobustBench's non-persistent buffers ``mean``, ``std`` [3,1,1], absent from its files, so they
come from the registry (a file that holds them is checked against it); the head is
``logits`` with a bias. Attribute names mirror the PyTorch module
(``layer.0.block.0.batchnorm_0``).
"""
from typing import Sequence

import jax
from flax import nnx

from jax_abstain.models import layers


class Block(nnx.Module):
  """BN-act-conv3x3(stride, TF-SAME padding)-BN-act-conv3x3, plus identity or 1x1 shortcut."""

  def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str, *,
               rngs: nnx.Rngs):
    if stride not in (1, 2):
      raise ValueError(f"unsupported stride {stride}")
    self.activation = activation
    self.batchnorm_0 = layers.batch_norm(in_planes, rngs=rngs)
    # DeepMind pads explicitly before a padding-0 conv: (1,1) at stride 1, (0,1) at stride 2.
    pad = ((1, 1), (1, 1)) if stride == 1 else ((0, 1), (0, 1))
    self.conv_0 = layers.conv2d(in_planes, out_planes, 3, stride=stride, padding=pad, rngs=rngs)
    self.batchnorm_1 = layers.batch_norm(out_planes, rngs=rngs)
    self.conv_1 = layers.conv2d(out_planes, out_planes, 3, stride=1, padding=1, rngs=rngs)
    self.has_shortcut = in_planes != out_planes
    self.shortcut = (layers.conv2d(in_planes, out_planes, 1, stride=stride, padding=0, rngs=rngs)
                     if self.has_shortcut else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    f = layers.activation(self.activation)
    act = f(self.batchnorm_0(x))
    out = self.conv_1(f(self.batchnorm_1(self.conv_0(act))))
    return (self.shortcut(act) if self.has_shortcut else x) + out


class BlockGroup(nnx.Module):
  """``num_blocks`` Blocks; the first one changes width and stride."""

  def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int,
               activation: str, *, rngs: nnx.Rngs):
    self.block = nnx.List([
        Block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
              activation, rngs=rngs) for i in range(num_blocks)])

  def __call__(self, x: jax.Array) -> jax.Array:
    for block in self.block:
      x = block(x)
    return x


class DMWideResNet(nnx.Module):
  """DeepMind WideResNet-depth-width.

  Args:
    num_classes: output classes.
    depth: 6n+4.
    width: widening factor k (stage widths 16k, 32k, 64k).
    activation: ``"swish"`` (the RobustBench DeepMind models) or ``"relu"``.
    mean, std: per-channel normalization (the registry entry's; a ported checkpoint's
      ``mean``/``std`` buffers, if any, must agree with them).
    padding: zero padding added around the input before normalization (DeepMind's option,
      0 for all CIFAR models).
  """

  def __init__(self, num_classes: int = 10, depth: int = 28, width: int = 10, *,
               activation: str = "swish", mean: Sequence[float] = layers.CIFAR10_MEAN,
               std: Sequence[float] = layers.CIFAR10_STD, padding: int = 0, rngs: nnx.Rngs):
    if (depth - 4) % 6:
      raise ValueError(f"DMWideResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    ch = [16, 16 * width, 32 * width, 64 * width]
    self.padding = padding
    self.activation = activation
    self.normalize = layers.Normalize(mean, std)
    self.init_conv = layers.conv2d(3, ch[0], 3, stride=1, padding=1, rngs=rngs)
    self.layer = nnx.List([BlockGroup(n, ch[i], ch[i + 1], 1 if i == 0 else 2, activation,
                                      rngs=rngs) for i in range(3)])
    self.batchnorm = layers.batch_norm(ch[3], rngs=rngs)
    self.logits = layers.linear(ch[3], num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,32,32,3] in [0,1] to logits [B,num_classes]."""
    if self.padding:
      p = self.padding
      x = jax.numpy.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = self.init_conv(self.normalize(x))
    for group in self.layer:
      out = group(out)
    out = layers.activation(self.activation)(self.batchnorm(out))
    return self.logits(layers.global_avg_pool(out))
