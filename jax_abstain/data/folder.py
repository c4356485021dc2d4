"""In-house image sets as class folders (e.g. the rail-defect set): ``root/<class>/*.png|jpg``.

    x, y = folder.load("train", path="rail_defects", size=(64, 64))   # x [N, 64, 64, 3]
    names = folder.class_names("rail_defects")                         # label i -> names[i]

Two layouts are accepted:
  * ``root/{train,val,test}/<class>/*`` -- the user's own split, used as is;
  * ``root/<class>/*`` -- split here, per class and reproducibly: the files of each class are
    sorted by name, permuted with ``numpy.random.default_rng([seed, class_index])``, and the
    first ``round(test_share * n)`` go to test, the next ``round(val_share * n)`` to val, the
    rest to train (defaults 0.1/0.1, seed 0).
Labels are the indices of the sorted class-folder names; `load` logs the class list (and a
warning naming any folder left out) and `class_names` returns it. Hidden entries and
operating-system metadata (`jax_abstain.files.is_hidden_or_system`: ``.ipynb_checkpoints``,
``.DS_Store``, ``._*`` AppleDouble files, ``__MACOSX``, ``Thumbs.db``, ``desktop.ini``,
``@eaDir``, ...) are never classes or images. Files ending in .png, .jpg, .jpeg, .tif, .tiff,
.bmp or .webp (any case) are images; other files are ignored. Images are decoded at their real
bit depth by `jax_abstain.data.images.decode` (a 16-bit PNG is value / 65535, never clipped to
8 bits) to RGB (``channels=3``) or grey (``channels=1``); with ``size=(H, W)`` they are resized
(bilinear), otherwise they must all have one size. An empty class folder, an unreadable image
or one without a fixed range (signed or 32-bit integers, floats outside [0, 1]) is a
`UserError`.
"""
import os

import numpy as np
from absl import logging
from PIL import Image

from jax_abstain import files as files_lib
from jax_abstain.data import images as images_lib
from jax_abstain.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
SPLIT_DIRS = ("train", "val", "test")


def _subdirs(path, skipped=None):
  """Sorted visible sub-folders of `path`; hidden/system folders are added to `skipped`."""
  visible, hidden = files_lib.visible_entries(path)
  if skipped is not None:
    skipped += [os.path.join(path, d) for d in hidden if os.path.isdir(os.path.join(path, d))]
  return [d for d in visible if os.path.isdir(os.path.join(path, d))]


def _images(path):
  visible, _ = files_lib.visible_entries(path)
  return [f for f in visible
          if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, f))]


def _has_split_dirs(root) -> bool:
  return "train" in _subdirs(root)


def class_names(path, skipped=None):
  """Sorted class-folder names; label i is ``class_names(path)[i]``.

  Args:
    path: the root folder (either layout).
    skipped: a list that receives the hidden or system folders left out, or None.
  """
  root = _check_root(path)
  if _has_split_dirs(root):
    names = set()
    for split in SPLIT_DIRS:
      if os.path.isdir(os.path.join(root, split)):
        names.update(_subdirs(os.path.join(root, split), skipped))
    return sorted(names)
  return _subdirs(root, skipped)


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
  """Decodes one image to float32 [H, W, channels] in [0, 1] at its real bit depth
  (`images.decode`); `size` = (H, W) resizes (bilinear)."""
  try:
    with Image.open(file) as im:
      return images_lib.decode(im, channels=channels, size=size)
  except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for broken files.
    raise UserError(f"folder: cannot read image {file!r} ({type(e).__name__}: {e})") from None
  except UserError as e:
    raise UserError(f"folder: image {file!r}: {e}") from None


def _report_classes(path) -> None:
  """Logs the class list, and warns about hidden or system folders that were left out."""
  skipped = []
  names = class_names(path, skipped)
  logging.info("folder: %d classes in %s (label i = i-th): %s", len(names), path,
               ", ".join(names))
  if skipped:
    logging.warning("folder: hidden or system folders are not classes, left out: %s; "
                    "classes: %s", ", ".join(skipped), ", ".join(names))


def load(split: str, path=None, *, size=None, channels=3, val_share=0.1, test_share=0.1, seed=0):
  """Loads one split of a class-folder image set.

  Args:
    split: ``train``, ``val`` or ``test``.
    path: the root folder (either layout, see the module docstring).
    size: (H, W) to resize to, or None to require equal sizes.
    channels: 3 (RGB) or 1 (grayscale).
    val_share, test_share, seed: the reproducible split of the flat layout.

  Returns:
    x float32 [N, H, W, channels] in [0, 1] (value / (2^bits - 1) of each image's depth),
    y int32 [N] in 0..num_classes-1 (label i is ``class_names(path)[i]``, logged here).

  Raises:
    UserError: a bad root, split, share or channel count, an empty class folder, an unreadable
      image or one without a fixed range, images of different sizes without `size`.
  """
  if channels not in (1, 3):
    raise UserError(f"folder: channels must be 1 or 3, got {channels}")
  files, labels = split_files(path, split, val_share=val_share, test_share=test_share, seed=seed)
  if not files:
    raise UserError(f"folder: split {split!r} of {str(path)!r} is empty")
  _report_classes(path)
  images = [read_image(f, channels=channels, size=size) for f in files]
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise UserError(f"folder: images have different sizes {sorted(shapes)[:3]}...; pass "
                    "size=(H, W) to resize")
  return np.stack(images).astype(np.float32), labels
