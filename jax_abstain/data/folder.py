"""In-house image sets as class folders (e.g. the rail-defect set): ``root/<class>/*.png|jpg``.

    x, y = folder.load("train", path="rail_defects", size=(64, 64))   # x [N, 64, 64, 3]
    names = folder.class_names("rail_defects")                         # label i -> names[i]

Two layouts are accepted:
  * ``root/{train,val,test}/<class>/*`` -- the user's own split, used as is;
  * ``root/<class>/*`` -- split here, per class and reproducibly: the files of each class are
    sorted by name, permuted with ``numpy.random.default_rng([seed, class_index])``, and the
    first ``round(test_share * n)`` go to test, the next ``round(val_share * n)`` to val, the
    rest to train (defaults 0.1/0.1, seed 0).
Labels are the indices of the sorted class-folder names. Files ending in .png, .jpg or .jpeg
(any case) are images; other files are ignored. Images are converted to RGB (``channels=3``)
or grayscale (``channels=1``); with ``size=(H, W)`` they are resized (bilinear), otherwise
they must all have one size. An empty class folder or an unreadable image is a `UserError`.
"""
import os

import numpy as np
from PIL import Image

from jax_abstain.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_DIRS = ("train", "val", "test")


def _subdirs(path):
  return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


def _images(path):
  return sorted(f for f in os.listdir(path)
                if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, f)))


def _has_split_dirs(root) -> bool:
  return "train" in _subdirs(root)


def class_names(path):
  """Sorted class-folder names; label i is ``class_names(path)[i]``."""
  root = _check_root(path)
  if _has_split_dirs(root):
    names = set()
    for split in SPLIT_DIRS:
      if os.path.isdir(os.path.join(root, split)):
        names.update(_subdirs(os.path.join(root, split)))
    return sorted(names)
  return _subdirs(root)


def _check_root(path):
  if path is None:
    raise UserError("folder: pass path= the root of root/<class>/*.png|jpg")
  root = os.path.expanduser(str(path))
  if not os.path.isdir(root):
    raise UserError(f"folder: {str(path)!r} is not a directory")
  if not _subdirs(root):
    raise UserError(f"folder: {str(path)!r} has no class folders (expected root/<class>/*.png)")
  return root


def split_files(path, split: str, *, val_share=0.1, test_share=0.1, seed=0):
  """Lists the (file, label) pairs of one split.

  Returns:
    files: list of image paths; labels: int32 [len(files)].
  """
  root = _check_root(path)
  names = class_names(root)
  files, labels = [], []
  if _has_split_dirs(root):
    split_root = os.path.join(root, split)
    if not os.path.isdir(split_root):
      raise UserError(f"folder: {str(path)!r} has no {split}/ folder")
    for name in _subdirs(split_root):
      found = _images(os.path.join(split_root, name))
      if not found:
        raise UserError(f"folder: class folder {os.path.join(split_root, name)!r} has no images")
      files += [os.path.join(split_root, name, f) for f in found]
      labels += [names.index(name)] * len(found)
    return files, np.asarray(labels, np.int32)
  if not (val_share >= 0 and test_share >= 0 and val_share + test_share < 1):
    raise UserError(f"folder: need val_share, test_share >= 0 summing below 1, got "
                    f"{val_share}, {test_share}")
  for label, name in enumerate(names):
    found = _images(os.path.join(root, name))
    if not found:
      raise UserError(f"folder: class folder {os.path.join(root, name)!r} has no images")
    order = np.random.default_rng([seed, label]).permutation(len(found))
    n_test, n_val = round(test_share * len(found)), round(val_share * len(found))
    part = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
            "train": order[n_test + n_val:]}[split]
    files += [os.path.join(root, name, found[i]) for i in sorted(part)]
    labels += [label] * len(part)
  return files, np.asarray(labels, np.int32)


def read_image(file, *, channels=3, size=None):
  """Decodes one image to uint8 [H, W, channels]; `size` = (H, W) resizes (bilinear)."""
  try:
    with Image.open(file) as im:
      im = im.convert("RGB" if channels == 3 else "L")
      if size is not None:
        im = im.resize((int(size[1]), int(size[0])), Image.BILINEAR)
      arr = np.asarray(im, np.uint8)
  except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for broken files.
    raise UserError(f"folder: cannot read image {file!r} ({type(e).__name__}: {e})") from None
  return arr.reshape(arr.shape[0], arr.shape[1], channels)


def load(split: str, path=None, *, size=None, channels=3, val_share=0.1, test_share=0.1, seed=0):
  """Loads one split of a class-folder image set.

  Args:
    split: ``train``, ``val`` or ``test``.
    path: the root folder (either layout, see the module docstring).
    size: (H, W) to resize to, or None to require equal sizes.
    channels: 3 (RGB) or 1 (grayscale).
    val_share, test_share, seed: the reproducible split of the flat layout.

  Returns:
    x float32 [N, H, W, channels] in [0, 1], y int32 [N] in 0..num_classes-1.
  """
  if channels not in (1, 3):
    raise UserError(f"folder: channels must be 1 or 3, got {channels}")
  files, labels = split_files(path, split, val_share=val_share, test_share=test_share, seed=seed)
  if not files:
    raise UserError(f"folder: split {split!r} of {str(path)!r} is empty")
  images = [read_image(f, channels=channels, size=size) for f in files]
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise UserError(f"folder: images have different sizes {sorted(shapes)[:3]}...; pass "
                    "size=(H, W) to resize")
  return np.stack(images).astype(np.float32) / 255.0, labels
