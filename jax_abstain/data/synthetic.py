"""The three-Gaussian 2-D data set of the paper's Figure 1 (docs/design.md, appendix A8).

    x, y = synthetic.three_gaussians(1000, seed=1)     # x [1000, 2] float32, y [1000] int32

Class 0: N((0.25, 0.25), diag(0.05^2, 0.05^2)), ceil(31/64 n) samples; class 2:
N((0.55, 0.80), diag((0.05/3)^2, (0.05/2)^2)), ceil(n/64) samples; class 1:
N((0.75, 0.75), diag(0.05^2, 0.05^2)), ceil(n/2) samples; concatenated in the order 0, 2, 1
and truncated to n (n = 1000 gives 485/16/499), as the authors' generator does. The points are
feature vectors, not images, so x is [N, 2]; they lie in [0, 1] (the nearest mean is 5 standard
deviations from the border; the rare point outside is clipped). Train and test are two
independent draws (seeds `seed` and `seed + 1`).
"""
import math

import numpy as np

MEANS = {0: (0.25, 0.25), 2: (0.55, 0.80), 1: (0.75, 0.75)}
STDS = {0: (0.05, 0.05), 2: (0.05 / 3, 0.05 / 2), 1: (0.05, 0.05)}
SHARES = {0: 31 / 64, 2: 1 / 64, 1: 1 / 2}
NUM_CLASSES = 3


def three_gaussians(n: int = 1000, seed: int = 1):
  """Draws n points; returns x [n, 2] float32 in [0, 1] and y [n] int32."""
  rng = np.random.default_rng(seed)
  xs, ys = [], []
  for label in (0, 2, 1):
    count = math.ceil(SHARES[label] * n)
    xs.append(rng.normal(MEANS[label], STDS[label], size=(count, 2)))
    ys.append(np.full(count, label))
  x = np.clip(np.concatenate(xs)[:n], 0.0, 1.0).astype(np.float32)
  return x, np.concatenate(ys)[:n].astype(np.int32)


def load(split: str, *, n: int = 1000, seed: int = 1):
  """The Figure 1 split: ``train`` is the draw with `seed`, ``test`` an independent one."""
  return three_gaussians(n, seed if split == "train" else seed + 1)
