"""CIFAR ResNet-(6n+2) of Cohen et al.'s randomized smoothing code (`archs/cifar_resnet.py`,
from bearpaw/pytorch-classification), ResNet-110 for the smoothing experiments.

    net = CifarResNet(depth=110, num_classes=10, rngs=nnx.Rngs(0))
    net.eval()
    logits = net(x)      # x: [B,32,32,3] in [0,1] -> [B,10]

Cohen et al. normalise with a `NormalizeLayer` placed in front of the network
(``nn.Sequential(normalize, resnet)``), whose mean/std are plain attributes, not state_dict
entries. Their checkpoints therefore hold ``1.conv1.weight`` etc. and say nothing about the
normalization, which is why it is a registry default here: CIFAR-10 mean (0.4914, 0.4822,
0.4465) and *std (0.2023, 0.1994, 0.2010)*, which differs from RobustBench's CIFAR-10 std.
"""
from typing import Sequence

import jax
from flax import nnx

from jax_abstain.models import layers

COHEN_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
COHEN_CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class BasicBlock(nnx.Module):
  """conv3x3(stride)-BN-ReLU-conv3x3-BN + (identity | 1x1 conv + BN ``downsample``), ReLU."""

  def __init__(self, inplanes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = layers.conv2d(inplanes, planes, 3, stride=stride, padding=1, rngs=rngs)
    self.bn1 = layers.batch_norm(planes, rngs=rngs)
    self.conv2 = layers.conv2d(planes, planes, 3, stride=1, padding=1, rngs=rngs)
    self.bn2 = layers.batch_norm(planes, rngs=rngs)
    self.downsample = (nnx.List([layers.conv2d(inplanes, planes, 1, stride=stride, rngs=rngs),
                                 layers.batch_norm(planes, rngs=rngs)])
                       if stride != 1 or inplanes != planes else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    residual = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
    return jax.nn.relu(out + residual)


class CifarResNet(nnx.Module):
  """ResNet-depth for 32x32 inputs: 3x3 stem (16 ch), three stages of n = (depth-2)/6 blocks
  with 16, 32, 64 channels, 8x8 average pool, linear head ``fc``.

  Args:
    depth: 6n+2 (8, 20, 56, 110, ...).
    num_classes: output classes.
    mean, std: input normalization (Cohen et al.'s CIFAR-10 statistics by default).
  """

  def __init__(self, depth: int = 110, num_classes: int = 10, *,
               mean: Sequence[float] = COHEN_CIFAR10_MEAN,
               std: Sequence[float] = COHEN_CIFAR10_STD, rngs: nnx.Rngs):
    if (depth - 2) % 6:
      raise ValueError(f"CifarResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    self.normalize = layers.Normalize(mean, std)
    self.conv1 = layers.conv2d(3, 16, 3, stride=1, padding=1, rngs=rngs)
    self.bn1 = layers.batch_norm(16, rngs=rngs)
    inplanes = 16
    stages = []
    for i, planes in enumerate((16, 32, 64)):
      blocks = []
      for j in range(n):
        blocks.append(BasicBlock(inplanes, planes, 2 if (i > 0 and j == 0) else 1, rngs=rngs))
        inplanes = planes
      stages.append(nnx.List(blocks))
    self.layer1, self.layer2, self.layer3 = stages
    self.fc = layers.linear(64, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,32,32,3] in [0,1] to logits [B,num_classes]."""
    out = jax.nn.relu(self.bn1(self.conv1(self.normalize(x))))
    for stage in (self.layer1, self.layer2, self.layer3):
      for block in stage:
        out = block(out)
    return self.fc(layers.global_avg_pool(out))
