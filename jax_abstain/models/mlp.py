"""Fully connected ReLU network, e.g. the paper's Figure 1 "mininet" (2-64-64-64-3).

    model = MLP(in_features=2, hidden=(64, 64, 64), num_classes=3, rngs=nnx.Rngs(0))
    logits = model(x)   # x: [B, 2] (or [B, H, W, C], flattened), logits: [B, 3]
"""
from typing import Sequence

import jax
from flax import nnx


class MLP(nnx.Module):
  """ReLU MLP; inputs of any trailing shape are flattened to ``in_features``."""

  def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, *, rngs: nnx.Rngs):
    widths = [in_features, *hidden]
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x [B, ...] with prod(...) == in_features to logits [B, num_classes]."""
    x = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
    return self.head(x)
