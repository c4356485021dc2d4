"""Data sets behind one call: ``x, y = jax_abstain.data.load(name, split, path=None, **opts)``.

    x, y = data.load("synthetic", "train")          # Figure 1 Gaussians, x [1000, 2]

x is float32 in [0, 1] (NHWC for images, [N, D] for feature vectors), y is int32.
"""
import numpy as np

from jax_abstain.data import synthetic
from jax_abstain.errors import UserError

SPLITS = ("train", "test")


def _synthetic(split, path=None, **opts):
  del path
  return synthetic.load(split, **opts)


_LOADERS = {"synthetic": _synthetic}


def register(name: str, loader) -> None:
  """Registers ``loader(split, path=None, **opts) -> (x, y)`` under `name`."""
  _LOADERS[name] = loader


def names():
  return sorted(_LOADERS)


def load(name: str, split: str, path=None, **opts):
  """Loads a split of a named data set as numpy arrays (x float32 in [0, 1], y int32)."""
  if name not in _LOADERS:
    raise UserError(f"unknown data set {name!r}; known: {', '.join(names())}")
  if split not in SPLITS:
    raise UserError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
  x, y = _LOADERS[name](split, path=path, **opts)
  return np.asarray(x, np.float32), np.asarray(y, np.int32)


__all__ = ["load", "names", "register"]
