"""Small CNN for 28x28 images (TRADES' MNIST `SmallCNN`), with its normalization inside.

    net = SmallCNN(num_classes=10, in_channels=1, rngs=nnx.Rngs(0))
    net.eval()           # turns dropout off
    logits = net(x)      # x: [B,28,28,1] in [0,1] -> [B,10]

Four valid-padded 3x3 convs (32, 32, 64, 64 channels) with two 2x2 max-pools, then
1024-200-200-classes with dropout after the first hidden layer. The PyTorch module flattens
NCHW features, so this one transposes to channel-first before flattening: the ported ``fc1``
weights then apply unchanged. Attribute names mirror ``feature_extractor.conv1`` and
``classifier.fc1``.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jax_abstain.models import layers


class FeatureExtractor(nnx.Module):

  def __init__(self, in_channels: int, *, rngs: nnx.Rngs):
    self.conv1 = layers.conv2d(in_channels, 32, 3, bias=True, rngs=rngs)
    self.conv2 = layers.conv2d(32, 32, 3, bias=True, rngs=rngs)
    self.conv3 = layers.conv2d(32, 64, 3, bias=True, rngs=rngs)
    self.conv4 = layers.conv2d(64, 64, 3, bias=True, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
    x = layers.max_pool(x, 2)
    x = jax.nn.relu(self.conv4(jax.nn.relu(self.conv3(x))))
    return layers.max_pool(x, 2)


class Classifier(nnx.Module):

  def __init__(self, num_classes: int, dropout: float, *, rngs: nnx.Rngs):
    self.fc1 = layers.linear(64 * 4 * 4, 200, rngs=rngs)
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    self.fc2 = layers.linear(200, 200, rngs=rngs)
    # TRADES initialises the last layer to zero; a fresh model starts at uniform predictions.
    self.fc3 = nnx.Linear(200, num_classes, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.drop(jax.nn.relu(self.fc1(x)))
    return self.fc3(jax.nn.relu(self.fc2(x)))


class SmallCNN(nnx.Module):
  """TRADES SmallCNN.

  Args:
    num_classes: output classes.
    in_channels: 1 for MNIST-like inputs.
    dropout: dropout rate after fc1 (active only in train mode).
    mean, std: input normalization (identity by default, as TRADES trains on [0,1]).
  """

  def __init__(self, num_classes: int = 10, *, in_channels: int = 1, dropout: float = 0.5,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               rngs: nnx.Rngs):
    self.normalize = layers.Normalize(mean or (0.0,) * in_channels, std or (1.0,) * in_channels)
    self.feature_extractor = FeatureExtractor(in_channels, rngs=rngs)
    self.classifier = Classifier(num_classes, dropout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,28,28,C] in [0,1] to logits [B,num_classes]."""
    features = self.feature_extractor(self.normalize(x))
    features = jnp.transpose(features, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    return self.classifier(features)


class GowalSmallCNN(nnx.Module):
  """The "small" network of Gowal et al. 2018 (IBP), table 1: conv 16 4x4 stride 2, conv 32
  4x4 stride 1 (valid padding), dense 100, dense classes, ReLU; 28x28 inputs in [0, 1].

  Shallow and narrow, so interval bounds stay tight (IBP training, `jax_abstain.ibp`); the
  selection network of the MNIST sweep (`jax_abstain.jobs.sweep`) is one with 2 classes.
  """

  def __init__(self, num_classes: int = 10, *, in_channels: int = 1, rngs: nnx.Rngs):
    self.normalize = layers.Normalize((0.0,) * in_channels, (1.0,) * in_channels)
    self.conv1 = layers.conv2d(in_channels, 16, 4, stride=2, bias=True, rngs=rngs)
    self.conv2 = layers.conv2d(16, 32, 4, bias=True, rngs=rngs)
    self.fc1 = layers.linear(32 * 10 * 10, 100, rngs=rngs)
    self.fc2 = layers.linear(100, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B,28,28,C] in [0,1] to logits [B,num_classes]."""
    h = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(self.normalize(x)))))
    return self.fc2(jax.nn.relu(self.fc1(h.reshape(x.shape[0], -1))))
