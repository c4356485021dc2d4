"""CIFAR-10/100 from the official python archives (downloaded when no path is given), or from
tfds, without TensorFlow.

    x, y = data.load("cifar10", "test")     # the official archive, downloaded into the cache
    x, y = cifar.load_archive("cifar10", "train", "cifar-10-python.tar.gz")  # [50000,32,32,3]
    x, y = cifar.load_archive("cifar100", "test", "data/cifar-100-python")   # extracted folder
    x, y = cifar.load_tfds("cifar10", "test", data_dir="~/tensorflow_datasets")
    x, y = data.load("cifar10", "test", path=P)   # P an archive/folder -> archive, else tfds

The archive reader takes the ``.tar.gz`` itself (read in memory, never extracted) or the folder
it extracts to (``cifar-10-batches-py``/``cifar-100-python``, or a folder holding one). Train is
``data_batch_1..5`` (CIFAR-10) or ``train`` (CIFAR-100, fine labels); test is ``test_batch`` or
``test``; there is no val split. The batches are pickles -- the official format -- read by a
restricted unpickler that builds only dicts, lists, bytes and numpy arrays, so a hostile file
cannot run code.

Without a path, `fetch_archive` downloads the official archive once into
``download.cache_dir("data")`` (``$JAX_ABSTAIN_DATA``, else the user cache folder) with
`download.fetch`: resumable, checked against the archive's published md5 (the values
torchvision's ``CIFAR10.tgz_md5``/``CIFAR100.tgz_md5`` hold), atomic, with a progress bar; the
next call reads the cached file without the network. ``$JAX_ABSTAIN_CIFAR_URL`` replaces the
base URL (a mirror, or the tests' loopback server). Offline, one line names the file to
download and where to put it, and nothing is written.

The tfds source uses `tfds.data_source` (ArrayRecord random access, no TensorFlow); the data
must have been prepared once, by someone with TensorFlow, with
``tfds build cifar10 --data_dir DIR --file_format=array_record``.
"""
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from jax_abstain import download
from jax_abstain.errors import UserError

ENV_URL = "JAX_ABSTAIN_CIFAR_URL"
BASE_URL = "https://www.cs.toronto.edu/~kriz/"
# name: (official archive, its md5 as published with the data set; torchvision checks the same)
ARCHIVES = {"cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
            "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")}

_SPECS = {
    # name: (folder inside the archive, train files, test files, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}

# Everything a CIFAR batch pickle legitimately references (numpy 1.x and 2.x spellings).
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that refuses every global outside the numpy array constructors above."""

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED_GLOBALS:
      raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
    return super().find_class(module, name)


def _unpickle(blob: bytes, where: str) -> dict:
  try:
    obj = _RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
  except Exception as e:  # Any parse failure means "not an official CIFAR batch".
    raise UserError(f"{where}: not a CIFAR batch pickle ({type(e).__name__}: {e})") from None
  if not isinstance(obj, dict):
    raise UserError(f"{where}: not a CIFAR batch (expected a dict, got {type(obj).__name__})")
  return obj


def _read_members(path: str, folder: str, files):
  """Returns {file: bytes} for `files` from an archive or an extracted folder."""
  if not os.path.exists(path):
    raise UserError(f"CIFAR path {path!r} does not exist")
  if os.path.isdir(path):
    root = path if os.path.exists(os.path.join(path, files[0])) else os.path.join(path, folder)
    out = {}
    for f in files:
      p = os.path.join(root, f)
      if not os.path.isfile(p):
        raise UserError(f"CIFAR folder {path!r} has no {f!r} (expected the extracted "
                        f"{folder}/ of the official archive)")
      with open(p, "rb") as fh:
        out[f] = fh.read()
    return out
  try:
    with tarfile.open(path, "r:*") as tar:
      by_name = {m.name: m for m in tar.getmembers() if m.isfile()}
      out = {}
      for f in files:
        member = by_name.get(f"{folder}/{f}")
        if member is None:
          raise UserError(f"{path}: archive has no {folder}/{f}; is this the right CIFAR archive?")
        out[f] = tar.extractfile(member).read()
      return out
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise UserError(f"{path}: unreadable CIFAR archive ({type(e).__name__}: {e})") from None


def load_archive(name: str, split: str, path):
  """Reads a split of the official CIFAR python archive.

  Args:
    name: ``cifar10`` or ``cifar100``.
    split: ``train`` or ``test``.
    path: the ``.tar.gz``, or the folder it extracts to (or that folder's parent).

  Returns:
    x uint8 [N, 32, 32, 3] (NHWC, 0..255), y int32 [N] in 0..9 or 0..99 (fine labels).
  """
  folder, train_files, test_files, label_key, classes = _SPECS[name]
  if split not in ("train", "test"):
    raise UserError(f"split: {name} has train and test only, got {split!r}")
  files = train_files if split == "train" else test_files
  blobs = _read_members(os.path.expanduser(str(path)), folder, files)
  xs, ys = [], []
  for f in files:
    batch = _unpickle(blobs[f], f"{path}:{f}")
    data, labels = batch.get(b"data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or labels is None:
      raise UserError(f"{path}:{f}: missing b'data' or {label_key!r}; wrong CIFAR variant?")
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 \
        or labels.shape != (data.shape[0],):
      raise UserError(f"{path}:{f}: expected uint8 data [N, 3072] and N labels, got "
                      f"{data.dtype} {data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
      raise UserError(f"{path}:{f}: labels outside 0..{classes - 1}; wrong CIFAR variant?")
    # The official rows are channel-major (1024 R, 1024 G, 1024 B), each row-major 32x32.
    xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    ys.append(labels.astype(np.int32))
  return np.concatenate(xs), np.concatenate(ys)


def load_tfds(name: str, split: str, data_dir=None):
  """Reads a split through `tfds.data_source` (needs `tensorflow-datasets`, not TensorFlow).

  Args:
    name: ``cifar10`` or ``cifar100`` (the tfds builder names).
    split: ``train`` or ``test``.
    data_dir: the tfds data directory; None means tfds' default.

  Returns:
    x uint8 [N, 32, 32, 3], y int32 [N] (CIFAR-100: fine labels).
  """
  if split not in ("train", "test"):
    raise UserError(f"split: {name} has train and test only, got {split!r}")
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise UserError("the tfds source needs tensorflow-datasets: pip install "
                    "'jax-abstain[tfds]', or pass the official archive as path") from None
  try:
    source = tfds.data_source(name, split=split, download=False,
                              data_dir=None if data_dir is None else os.path.expanduser(data_dir))
  except Exception as e:  # tfds raises several types for "not prepared here".
    raise UserError(f"tfds {name}/{split} not found in data_dir={data_dir!r} ({type(e).__name__});"
                    f" prepare it with `tfds build {name} --file_format=array_record`, or pass "
                    "the official archive as path") from None
  n = len(source)
  x = np.empty((n, 32, 32, 3), np.uint8)
  y = np.empty((n,), np.int32)
  for i in range(n):
    record = source[i]
    x[i], y[i] = record["image"], record["label"]
  return x, y


def archive_url(name: str) -> str:
  """The download URL of `name`'s official archive (``$JAX_ABSTAIN_CIFAR_URL`` + file name, or
  the Toronto page's)."""
  base = os.environ.get(ENV_URL) or BASE_URL
  return base.rstrip("/") + "/" + ARCHIVES[name][0]


def cached_archive(name: str):
  """Where `fetch_archive` keeps `name`'s archive: ``download.cache_dir("data")/<file>``."""
  return download.cache_dir("data") / ARCHIVES[name][0]


def fetch_archive(name: str, *, progress: bool = True):
  """The official archive of `name` in the cache, downloaded first if it is not there.

  Args:
    name: ``cifar10`` or ``cifar100``.
    progress: show a download progress bar.

  Returns:
    The archive's path (``cached_archive(name)``).

  Raises:
    UserError: offline or an HTTP error (one line naming the file and where to put it;
      nothing written), a cut connection (run again to resume), a wrong md5 (nothing cached).
  """
  filename, md5 = ARCHIVES[name]
  return download.fetch(archive_url(name), cached_archive(name), md5=md5, progress=progress,
                        what=f"the {name} archive {filename}")


def _is_archive(path) -> bool:
  p = os.path.expanduser(str(path))
  if os.path.isfile(p):
    return True
  return os.path.isdir(p) and any(
      os.path.exists(os.path.join(p, f)) for spec in _SPECS.values()
      for f in [spec[0], *spec[1], *spec[2]])


def loader(name: str):
  """The `data.load` entry for `name`: ``loader(split, path, source="auto")`` -> float x, int y.

  ``source="archive"`` reads `path` as the official archive/folder, ``"tfds"`` as a tfds
  data_dir, ``"auto"`` picks the archive when `path` is a file or an extracted CIFAR folder.
  Without a path, ``"auto"`` and ``"archive"`` read the official archive from the cache,
  downloading it first (`fetch_archive`); ``progress=False`` hides the download bar.
  """
  def load(split, path=None, source="auto", progress=True):
    if source not in ("auto", "archive", "tfds"):
      raise UserError(f"source: expected auto, archive or tfds, got {source!r}")
    if path is not None and not os.path.exists(os.path.expanduser(str(path))):
      raise UserError(f"{name}: path {str(path)!r} does not exist")
    if split not in ("train", "test"):   # before any download
      raise UserError(f"split: {name} has train and test only, got {split!r}")
    if path is None and source != "tfds":
      path = fetch_archive(name, progress=progress)
    if source == "archive" or (source == "auto" and _is_archive(path)):
      x, y = load_archive(name, split, path)
    else:
      x, y = load_tfds(name, split, path)
    return x.astype(np.float32) / 255.0, y
  return load
