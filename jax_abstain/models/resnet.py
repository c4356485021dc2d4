"""ResNets: RobustBench's CIFAR ResNet-18/50 and PreAct ResNet-18, and torchvision's ImageNet
ResNet-50, each with its normalization inside.

    net = ResNet(blocks=(2, 2, 2, 2), num_classes=10, rngs=nnx.Rngs(0))        # ResNet-18
    net = PreActResNet(blocks=(2, 2, 2, 2), num_classes=10, rngs=nnx.Rngs(0))  # PreAct-18
    net = ImageNetResNet(blocks=(3, 4, 6, 3), num_classes=1000, rngs=nnx.Rngs(0))  # R-50
    net.eval(); logits = net(x)      # x: [B,H,W,3] in [0,1]

Attribute names mirror the PyTorch modules (``layer1.0.shortcut.0``, ``linear`` for
RobustBench; ``layer1.0.downsample.0``, ``fc`` for torchvision) so the porting table is a
mechanical rename. ``base_width`` (64 in every published model) exists so tests can build the
same topology small.
"""
from typing import Sequence

import jax
from flax import nnx

from jax_abstain.models import layers


class BasicBlock(nnx.Module):
  """conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv + BN when shape changes), then ReLU."""
  expansion = 1

  def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = layers.conv2d(in_planes, planes, 3, stride=stride, padding=1, rngs=rngs)
    self.bn1 = layers.batch_norm(planes, rngs=rngs)
    self.conv2 = layers.conv2d(planes, planes, 3, stride=1, padding=1, rngs=rngs)
    self.bn2 = layers.batch_norm(planes, rngs=rngs)
    self.shortcut = _projection(in_planes, planes, stride, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return jax.nn.relu(out + _apply(self.shortcut, x))


class Bottleneck(nnx.Module):
  """1x1-3x3(stride)-1x1 bottleneck with 4x expansion (stride on the 3x3, "ResNet v1.5")."""
  expansion = 4

  def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs,
               shortcut_name: str = "shortcut"):
    self.conv1 = layers.conv2d(in_planes, planes, 1, rngs=rngs)
    self.bn1 = layers.batch_norm(planes, rngs=rngs)
    self.conv2 = layers.conv2d(planes, planes, 3, stride=stride, padding=1, rngs=rngs)
    self.bn2 = layers.batch_norm(planes, rngs=rngs)
    self.conv3 = layers.conv2d(planes, planes * 4, 1, rngs=rngs)
    self.bn3 = layers.batch_norm(planes * 4, rngs=rngs)
    self.shortcut_name = shortcut_name
    # RobustBench calls the projection `shortcut`, torchvision `downsample`.
    setattr(self, shortcut_name, _projection(in_planes, planes * 4, stride, rngs=rngs))

  def __call__(self, x: jax.Array) -> jax.Array:
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = jax.nn.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return jax.nn.relu(out + _apply(getattr(self, self.shortcut_name), x))


def _projection(in_planes, out_planes, stride, *, rngs):
  """[conv1x1(stride), BN] when the shape changes, else None (identity)."""
  if stride == 1 and in_planes == out_planes:
    return None
  return nnx.List([layers.conv2d(in_planes, out_planes, 1, stride=stride, rngs=rngs),
                   layers.batch_norm(out_planes, rngs=rngs)])


def _apply(projection, x):
  return x if projection is None else projection[1](projection[0](x))


def _stages(block_cls, in_planes, base_width, blocks, first_stride, rngs, **block_kwargs):
  """Builds layer1..layer4 as lists of blocks; returns (stages, output channels)."""
  stages = []
  for i, n in enumerate(blocks):
    planes = base_width * 2 ** i
    stride = first_stride if i == 0 else 2
    stage = []
    for j in range(n):
      stage.append(block_cls(in_planes, planes, stride if j == 0 else 1, rngs=rngs, **block_kwargs))
      in_planes = planes * block_cls.expansion
    stages.append(nnx.List(stage))
  return stages, in_planes


class ResNet(nnx.Module):
  """RobustBench's CIFAR ResNet (3x3 stem, no max-pool): ResNet-18 = BasicBlock (2,2,2,2),
  ResNet-50 = Bottleneck (3,4,6,3).

  Args:
    blocks: blocks per stage (4 stages).
    bottleneck: use Bottleneck blocks instead of BasicBlocks.
    num_classes: output classes.
    base_width: channels of the stem and first stage (64).
    mean, std: input normalization (identity for Sehwag2021Proxy_R18).
  """

  def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10, *,
               bottleneck: bool = False, base_width: int = 64,
               mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
               rngs: nnx.Rngs):
    self.normalize = layers.Normalize(mean, std)
    self.conv1 = layers.conv2d(3, base_width, 3, stride=1, padding=1, rngs=rngs)
    self.bn1 = layers.batch_norm(base_width, rngs=rngs)
    stages, out_ch = _stages(Bottleneck if bottleneck else BasicBlock, base_width, base_width,
                             blocks, 1, rngs)
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.linear = layers.linear(out_ch, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,32,32,3] in [0,1] to logits [B,num_classes]."""
    out = jax.nn.relu(self.bn1(self.conv1(self.normalize(x))))
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in stage:
        out = block(out)
    return self.linear(layers.global_avg_pool(out))


class PreActBlock(nnx.Module):
  """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3; the 1x1 shortcut (no BN) sees the raw input."""
  expansion = 1

  def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
    self.bn1 = layers.batch_norm(in_planes, rngs=rngs)
    self.conv1 = layers.conv2d(in_planes, planes, 3, stride=stride, padding=1, rngs=rngs)
    self.bn2 = layers.batch_norm(planes, rngs=rngs)
    self.conv2 = layers.conv2d(planes, planes, 3, stride=1, padding=1, rngs=rngs)
    self.shortcut = (nnx.List([layers.conv2d(in_planes, planes, 1, stride=stride, rngs=rngs)])
                     if stride != 1 or in_planes != planes else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    out = jax.nn.relu(self.bn1(x))
    shortcut = x if self.shortcut is None else self.shortcut[0](x)
    out = self.conv2(jax.nn.relu(self.bn2(self.conv1(out))))
    return out + shortcut


class PreActResNet(nnx.Module):
  """RobustBench's PreActResNet-18 (PreActBlock (2,2,2,2), no final BN).

  Args:
    blocks: blocks per stage.
    num_classes: output classes.
    base_width: first-stage channels (64).
    mean, std: input normalization (CIFAR-10 statistics for Wong2020Fast-style models).
  """

  def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10, *,
               base_width: int = 64, mean: Sequence[float] = (0.0, 0.0, 0.0),
               std: Sequence[float] = (1.0, 1.0, 1.0), rngs: nnx.Rngs):
    self.normalize = layers.Normalize(mean, std)
    self.conv1 = layers.conv2d(3, base_width, 3, stride=1, padding=1, rngs=rngs)
    stages, out_ch = _stages(PreActBlock, base_width, base_width, blocks, 1, rngs)
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.linear = layers.linear(out_ch, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,32,32,3] in [0,1] to logits [B,num_classes]."""
    out = self.conv1(self.normalize(x))
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in stage:
        out = block(out)
    return self.linear(layers.global_avg_pool(out))


class ImageNetResNet(nnx.Module):
  """torchvision's ImageNet ResNet (7x7/2 stem, 3x3/2 max-pool), ResNet-50 by default.

  Cohen et al.'s ImageNet smoothing models and RobustBench's ImageNet ResNet-50s are this
  network behind an ImageNet mean/std normalization.

  Args:
    blocks: Bottleneck blocks per stage ((3,4,6,3) for ResNet-50).
    num_classes: output classes (1000).
    base_width: first-stage bottleneck width (64).
    mean, std: input normalization (ImageNet statistics).
  """

  def __init__(self, blocks: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000, *,
               base_width: int = 64, mean: Sequence[float] = layers.IMAGENET_MEAN,
               std: Sequence[float] = layers.IMAGENET_STD, rngs: nnx.Rngs):
    self.normalize = layers.Normalize(mean, std)
    self.conv1 = layers.conv2d(3, base_width, 7, stride=2, padding=3, rngs=rngs)
    self.bn1 = layers.batch_norm(base_width, rngs=rngs)
    stages, out_ch = _stages(Bottleneck, base_width, base_width, blocks, 1, rngs,
                             shortcut_name="downsample")
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.fc = layers.linear(out_ch, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,H,W,3] in [0,1] (224x224 for ImageNet) to logits [B,num_classes]."""
    out = jax.nn.relu(self.bn1(self.conv1(self.normalize(x))))
    # torch's MaxPool2d(3, 2, padding=1) pads with -inf, as reduce_window's max does.
    out = nnx.max_pool(out, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in stage:
        out = block(out)
    return self.fc(layers.global_avg_pool(out))
