"""Tiny CIFAR-10/100 archives in the official format, for tests (no download).

    archive, folder = tiny_cifar.write_cifar(root, "cifar10", n=6)   # .tar.gz and extracted
    blob = tiny_cifar.archive_bytes("cifar100", n=4)                   # the .tar.gz as bytes

The batches are what the official files hold: Python pickles (protocol 2, as the Python 2
originals) of a dict with byte-string keys ``batch_label``, ``data`` (uint8 [n, 3072],
channel-major rows), ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100) and ``filenames``,
with numpy 1.x module names (``numpy.core.multiarray``). CIFAR-10: ``data_batch_1..5`` and
``test_batch`` in ``cifar-10-batches-py/``; CIFAR-100: ``train`` and ``test`` in
``cifar-100-python/``. The first image of the first file is the constant colour (10, 20, 30).
"""
import os
import pickle
import tarfile
import tempfile

import numpy as np


def batch_bytes(n, label_key, classes, seed, rgb=None):
  """One batch pickle of `n` random images and labels in 0..classes-1."""
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
  if rgb is not None:  # channel-major rows: 1024 R, then 1024 G, then 1024 B
    pixels[0] = np.repeat(np.asarray(rgb, np.uint8), 1024)
  batch = {b"batch_label": b"testing", b"data": pixels,
           label_key: rng.integers(0, classes, n).tolist(),
           b"filenames": [b"f%d.png" % i for i in range(n)]}
  # The official files were pickled under numpy 1.x, which names its module numpy.core.
  return pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray",
                                                 b"numpy.core.multiarray")


def write_cifar(root, name, n=6):
  """Writes cifar-10/100-python.tar.gz and the extracted folder; returns (archive, folder)."""
  if name == "cifar10":
    folder_name, key, classes = "cifar-10-batches-py", b"labels", 10
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  else:
    folder_name, key, classes = "cifar-100-python", b"fine_labels", 100
    files = ["train", "test"]
  extracted = os.path.join(root, folder_name)
  os.makedirs(extracted)
  for i, f in enumerate(files):
    with open(os.path.join(extracted, f), "wb") as fh:
      fh.write(batch_bytes(n, key, classes, i, rgb=(10, 20, 30) if i == 0 else None))
  archive = os.path.join(root, f"{name.replace('cifar', 'cifar-')}-python.tar.gz")
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(extracted, arcname=folder_name)
  return archive, extracted


def archive_bytes(name, n=6) -> bytes:
  """The bytes of `write_cifar`'s archive (to serve on the loopback server)."""
  with tempfile.TemporaryDirectory() as root:
    archive, _ = write_cifar(root, name, n)
    with open(archive, "rb") as f:
      return f.read()
