"""WideResNet-d-k as in TRADES / RobustBench (`wide_resnet.py`), with its normalization inside.

    net = WideResNet(depth=28, widen_factor=10, num_classes=10, sub_block1=True,
                     rngs=nnx.Rngs(0))
    net.eval()
    logits = net(x)      # x: [B,32,32,3] in [0,1] -> [B,10]

Attribute names mirror the PyTorch module (``block1.layer.0.conv1``, ``convShortcut``, ``fc``),
so the porting table maps ``a.b.c.weight`` to NNX path ``a/b/c/kernel`` without special cases.
Used by Carmon2019Unlabeled, Wang2020Improving (WRN-28-10), Zhang2019Theoretically (WRN-34-10)
and Ding2020MMA (WRN-28-4, per-image standardisation).
"""
from typing import Sequence

import jax
from flax import nnx

from jax_abstain.models import layers


class BasicBlock(nnx.Module):
  """Pre-activation block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 plus a shortcut.

  When the width changes, the shortcut is a 1x1 conv applied to the *activated* input (as in
  the TRADES code; torch's ``x = relu1(bn1(x))`` rebinds x before the shortcut).
  """

  def __init__(self, in_planes: int, out_planes: int, stride: int, *, rngs: nnx.Rngs):
    self.bn1 = layers.batch_norm(in_planes, rngs=rngs)
    self.conv1 = layers.conv2d(in_planes, out_planes, 3, stride=stride, padding=1, rngs=rngs)
    self.bn2 = layers.batch_norm(out_planes, rngs=rngs)
    self.conv2 = layers.conv2d(out_planes, out_planes, 3, stride=1, padding=1, rngs=rngs)
    self.equal_in_out = in_planes == out_planes
    self.convShortcut = (None if self.equal_in_out else
                         layers.conv2d(in_planes, out_planes, 1, stride=stride, padding=0, rngs=rngs))

  def __call__(self, x: jax.Array) -> jax.Array:
    act = jax.nn.relu(self.bn1(x))
    out = self.conv2(jax.nn.relu(self.bn2(self.conv1(act))))
    return (x if self.equal_in_out else self.convShortcut(act)) + out


class NetworkBlock(nnx.Module):
  """``nb_layers`` BasicBlocks; the first one changes width and stride."""

  def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, *,
               rngs: nnx.Rngs):
    self.layer = nnx.List([
        BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                   rngs=rngs) for i in range(nb_layers)])

  def __call__(self, x: jax.Array) -> jax.Array:
    for block in self.layer:
      x = block(x)
    return x


class WideResNet(nnx.Module):
  """WideResNet-depth-widen_factor for 32x32 inputs.

  Args:
    depth: 6n+4 (10, 16, 28, 34, 70, ...).
    widen_factor: k; stage widths are 16k, 32k, 64k.
    num_classes: output classes.
    sub_block1: build the unused ``sub_block1`` that many TRADES-derived checkpoints carry
      (Carmon2019Unlabeled, Zhang2019Theoretically, ...). It never runs; it exists so those
      state_dicts port strictly and export back to a module RobustBench loads strictly.
    bias_last: whether ``fc`` has a bias.
    mean, std: per-channel input normalization (identity by default: those checkpoints were
      trained on raw [0,1] inputs).
    normalization: ``"mean_std"`` or ``"per_image"`` (Ding2020MMA), see `layers.Normalize`.
  """

  def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, *,
               sub_block1: bool = False, bias_last: bool = True,
               mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
               normalization: str = "mean_std", rngs: nnx.Rngs):
    if (depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    self.normalize = layers.Normalize(mean, std, mode=normalization)
    self.conv1 = layers.conv2d(3, ch[0], 3, stride=1, padding=1, rngs=rngs)
    self.block1 = NetworkBlock(n, ch[0], ch[1], 1, rngs=rngs)
    self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1, rngs=rngs) if sub_block1 else None
    self.block2 = NetworkBlock(n, ch[1], ch[2], 2, rngs=rngs)
    self.block3 = NetworkBlock(n, ch[2], ch[3], 2, rngs=rngs)
    self.bn1 = layers.batch_norm(ch[3], rngs=rngs)
    self.fc = layers.linear(ch[3], num_classes, bias=bias_last, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,32,32,3] in [0,1] to logits [B,num_classes]."""
    out = self.conv1(self.normalize(x))
    out = self.block3(self.block2(self.block1(out)))
    out = jax.nn.relu(self.bn1(out))
    return self.fc(layers.global_avg_pool(out))
