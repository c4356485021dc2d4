"""Data sets behind one call: ``x, y = jax_abstain.data.load(name, split, path=None, **opts)``.

    x, y = data.load("synthetic", "train")                      # Figure 1 Gaussians, x [1000, 2]
    x, y = data.load("mnist5k", "test")                         # x [1000, 28, 28, 1]
    x, y = data.load("cifar10", "train", path="cifar-10-python.tar.gz")
    x, y = data.load("cifar10", "test")      # the official archive, downloaded into the cache
    x, y = data.load("cifar10", "test", path="~/tensorflow_datasets", source="tfds")
    x, y = data.load("mtsd", "test", path="mtsd_cls")           # output of `python -m ...mtsd`
    x, y = data.load("folder", "val", path="rail_defects")      # root/<class>/*.png|jpg

x is float32 in [0, 1] (NHWC for images, [N, D] for feature vectors), y is int32.
Training input (shuffling, sharding, augmentation, resumable iterators) is built from these
arrays by `jax_abstain.data.pipeline`.
"""
import importlib
import inspect

import numpy as np

from jax_abstain.data import synthetic
from jax_abstain.errors import UserError

SPLITS = ("train", "val", "test")


def _synthetic(split, path=None, *, n=1000, seed=1):
  del path
  if split == "val":
    raise UserError("split: the synthetic data set has train and test only, got 'val'")
  return synthetic.load(split, n=n, seed=seed)


def _call(name, fn, split, path, opts):
  """Calls a loader, turning options it does not take into a one-line UserError."""
  try:
    inspect.signature(fn).bind(split, path=path, **opts)
  except TypeError as e:
    raise UserError(f"data set {name!r}: bad options {sorted(opts)} ({e})") from None
  return fn(split, path=path, **opts)


def _lazy(name: str, module: str, attr: str, *args):
  """A loader imported on first use: keeps `import jax_abstain` light (no Pillow, tarfile),
  and lets ``python -m jax_abstain.data.mtsd`` run without the module being imported twice."""
  def load(split, path=None, **opts):
    fn = getattr(importlib.import_module(f"jax_abstain.data.{module}"), attr)
    return _call(name, fn(*args) if args else fn, split, path, opts)
  return load


_LOADERS = {
    "synthetic": _synthetic,
    "mnist5k": _lazy("mnist5k", "offline", "load_mnist5k"),
    "digits": _lazy("digits", "offline", "load_digits"),
    "cifar10": _lazy("cifar10", "cifar", "loader", "cifar10"),
    "cifar100": _lazy("cifar100", "cifar", "loader", "cifar100"),
    "mtsd": _lazy("mtsd", "mtsd", "load"),
    "folder": _lazy("folder", "folder", "load"),
}


def register(name: str, loader) -> None:
  """Registers ``loader(split, path=None, **opts) -> (x, y)`` under `name`."""
  _LOADERS[name] = loader


def names():
  return sorted(_LOADERS)


def load(name: str, split: str, path=None, **opts):
  """Loads a split of a named data set as numpy arrays.

  Args:
    name: one of `names()`.
    split: ``train``, ``val`` or ``test`` (not every set has ``val``).
    path: where the data lives (archive, folder, tfds data_dir); unused by built-in sets.
    **opts: loader-specific options (see the loader's docstring).

  Returns:
    x float32 in [0, 1] ([N, H, W, C] for images, [N, D] for feature vectors), y int32 [N].
  """
  if name not in _LOADERS:
    raise UserError(f"unknown data set {name!r}; known: {', '.join(names())}")
  if split not in SPLITS:
    raise UserError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
  x, y = _call(name, _LOADERS[name], split, path, opts)
  return np.asarray(x, np.float32), np.asarray(y, np.int32)


def _fetch_cifar(name):
  def fetch_archive(progress=True):
    from jax_abstain.data import cifar  # pylint: disable=import-outside-toplevel
    return cifar.fetch_archive(name, progress=progress)
  return fetch_archive


# Data sets that `load` downloads when no path is given: name -> fetch(progress) -> path.
_DOWNLOADS = {"cifar10": _fetch_cifar("cifar10"), "cifar100": _fetch_cifar("cifar100")}


def fetch(name: str, path=None, *, progress: bool = True):
  """Downloads now what ``load(name, split, path)`` would download (a job calls it before
  it writes anything, so that a missing file or no network stops it first).

  Args:
    name: one of `names()`.
    path: the data's path ("" or None: the set's default: downloaded, or built in).
    progress: show a download progress bar.

  Returns:
    The path `load` will read (`path`, the downloaded file), or None for built-in sets.

  Raises:
    UserError: an unknown set, or a download that fails (offline: one line naming the file
      and where to put it, nothing written).
  """
  if name not in _LOADERS:
    raise UserError(f"unknown data set {name!r}; known: {', '.join(names())}")
  if path:
    return path
  return _DOWNLOADS[name](progress=progress) if name in _DOWNLOADS else None


__all__ = ["SPLITS", "fetch", "load", "load_from_config", "names", "register"]


def load_from_config(data_config, split: str, limit: int = 0):
  """``load`` of a job's data set (`jobs.schema.DataConfig`: ``name``, ``path``; "" = none).

  Args:
    data_config: the job's checked `DataConfig`.
    split: ``train``, ``val`` or ``test``.
    limit: keep this many samples (0 = all), evenly spaced over the split so that a split
      stored sorted by class stays balanced (a fast CPU demo, or the paper's 500 certified
      points).

  Returns:
    x, y and idx [N] int64, the samples' indices in the full split (report ``sample_idx``).
  """
  x, y = load(data_config.name, split, path=data_config.path or None)
  idx = np.arange(len(y))
  if limit and limit < len(y):
    idx = np.unique(np.linspace(0, len(y) - 1, limit).round().astype(np.int64))
  return x[idx], y[idx], idx
