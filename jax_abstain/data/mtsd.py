"""Mapillary Traffic Sign Dataset -> 64x64 classification crops (paper appendix A.1).

    mtsd.convert("mtsd_v2_fully_annotated", "mtsd_cls", workers=2)   # -> summary dict
    x, y = jax_abstain.data.load("mtsd", "test", path="mtsd_cls")    # x [N, 64, 64, 3]

Command line: ``jax-abstain-mtsd --src mtsd_v2_fully_annotated --out mtsd_cls [--workers 2]``
(`jax_abstain.cli.mtsd`). `src` is the official layout: ``images/<key>.jpg``,
``annotations/<key>.json`` and ``splits/<split>.txt`` (one image key per line). Each
annotation holds ``width``, ``height`` and ``objects``, a list of ``{"label", "bbox":
{"xmin","ymin","xmax","ymax"}, "properties": {"occluded", "out-of-frame", "exterior",
"ambiguous", "included", "dummy", ...}}``.

Conversion, per appendix A.1: (1) drop boxes flagged with any of the six properties and boxes
labelled ``other-sign``; (2) crop each remaining box with random slack, eq. 16: for a box of
width w and height h, ``[xmin - lam*ax*w, xmax + lam*(1-ax)*w] x [ymin - lam*ay*h, ymax +
lam*(1-ay)*h]`` with ax, ay ~ U[0, 1] and lam = 1.0; (3) resize to 64x64 (bilinear).
The slack box is clipped to the image (the paper does not say; padding would add black
borders that real signs never have). The draws are seeded per box,
``default_rng([seed, crc32(image_key), object_index])``, so the output does not depend on
order or worker count.

The public MTSD release has no test annotations, so by default the official ``val`` split
becomes our ``test`` (``split_map="train=train,val=test"``). Skipped inputs are never silent:
images without annotation file, annotations without boxes, unreadable images, degenerate or
panorama-wrapping boxes are counted, logged and written to ``summary.json``. Images are read
at their real bit depth (`jax_abstain.data.images.to_rgb8`); the image and annotation files
come from the split lists, never from listing a folder, so hidden or system files
(``.DS_Store``, ``._<key>.jpg``) are never read.

Output: ``<split>.npz`` (``x`` uint8 [N, 64, 64, 3], ``y`` int32 [N], ``key`` the image key
of each crop), ``label_map.json`` (``{"labels": [name, ...]}``; label i is ``labels[i]``, the
sorted names of all kept boxes) and ``summary.json``.
"""
import concurrent.futures
import json
import os
import zlib

import numpy as np
from absl import logging
from PIL import Image

from jax_abstain import files
from jax_abstain.data import images
from jax_abstain.errors import UserError

FLAGS = ("occluded", "out-of-frame", "exterior", "ambiguous", "included", "dummy")
OTHER_SIGN = "other-sign"
SIZE = 64
SLACK = 1.0
DEFAULT_SPLIT_MAP = "train=train,val=test"


def slack_box(bbox, rng, lam=SLACK):
  """Eq. 16: the randomly upsized box (xmin, ymin, xmax, ymax), before clipping."""
  w, h = bbox["xmax"] - bbox["xmin"], bbox["ymax"] - bbox["ymin"]
  ax, ay = rng.uniform(0.0, 1.0, size=2)
  return (bbox["xmin"] - lam * ax * w, bbox["ymin"] - lam * ay * h,
          bbox["xmax"] + lam * (1 - ax) * w, bbox["ymax"] + lam * (1 - ay) * h)


def box_rng(seed: int, key: str, index: int):
  return np.random.default_rng([seed, zlib.crc32(key.encode()), index])


def keep_reason(obj):
  """None if the box is kept, else the reason it is dropped (a flag name, other-sign, ...)."""
  if obj.get("label") == OTHER_SIGN:
    return OTHER_SIGN
  props = obj.get("properties", {})
  for flag in FLAGS:
    if props.get(flag, False):
      return flag
  box = obj.get("bbox")
  if not box or any(k not in box for k in ("xmin", "ymin", "xmax", "ymax")):
    return "no-bbox"
  if "cross_boundary" in box or box["xmax"] <= box["xmin"] or box["ymax"] <= box["ymin"]:
    return "degenerate-or-wrapping"
  return None


def _read_annotation(src, key):
  path = os.path.join(src, "annotations", f"{key}.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"mtsd: annotation {path!r} is not valid JSON ({e})") from None


def crop_image(src, key, objects, label_index, seed, lam=SLACK):
  """Crops the kept boxes of one image.

  Returns:
    (crops uint8 [K, 64, 64, 3], labels int32 [K]), or None if the image cannot be read.
  """
  path = os.path.join(src, "images", f"{key}.jpg")
  try:
    with Image.open(path) as im:
      im = images.to_rgb8(im)     # scaled by the real bit depth, never clipped at 255
      crops, labels = [], []
      for index, obj in objects:
        x0, y0, x1, y1 = slack_box(obj["bbox"], box_rng(seed, key, index), lam)
        box = (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))),
               min(im.width, int(np.ceil(x1))), min(im.height, int(np.ceil(y1))))
        crops.append(np.asarray(im.crop(box).resize((SIZE, SIZE), Image.BILINEAR), np.uint8))
        labels.append(label_index[obj["label"]])
  except (OSError, SyntaxError, ValueError, UserError) as e:
    logging.warning("mtsd: skipping unreadable image %s (%s)", path, e)
    return None
  return (np.stack(crops) if crops else np.zeros((0, SIZE, SIZE, 3), np.uint8),
          np.asarray(labels, np.int32))


def _parse_split_map(text):
  try:
    pairs = dict(part.split("=") for part in text.split(",") if part)
  except ValueError:
    raise UserError(f"split map (--split-map): expected src=dst[,src=dst], got {text!r}") from None
  bad = [d for d in pairs.values() if d not in ("train", "val", "test")]
  if bad:
    raise UserError(f"split map (--split-map): destination must be train, val or test, "
                    f"got {bad[0]!r}")
  return pairs


def _plan(src, split_map, stats):
  """Reads the annotations: {dst split: [(key, [(object_index, object), ...])]} of kept boxes;
  counts what is skipped or dropped in `stats`."""
  todo = {}
  for src_split, dst_split in _parse_split_map(split_map).items():
    list_path = os.path.join(src, "splits", f"{src_split}.txt")
    if not os.path.isfile(list_path):
      raise UserError(f"mtsd: {list_path!r} is missing")
    with open(list_path) as f:
      keys = [line.strip() for line in f if line.strip()]
    for key in keys:
      ann = _read_annotation(src, key)
      if ann is None:
        stats["images_without_annotation"] += 1
        continue
      if not ann.get("objects"):
        stats["annotations_without_boxes"] += 1
        continue
      kept = []
      for index, obj in enumerate(ann["objects"]):
        reason = keep_reason(obj)
        if reason is None:
          kept.append((index, obj))
        else:
          stats["dropped_boxes"][reason] = stats["dropped_boxes"].get(reason, 0) + 1
      if kept:
        todo.setdefault(dst_split, []).append((key, kept))
  return todo


def _write_split(out, dst_split, items, results, stats):
  """Stacks the crops of one split into ``<out>/<split>.npz`` (written atomically)."""
  xs, ys, keys = [], [], []
  for (key, _), result in zip(items, results):
    if result is None:
      stats["unreadable_images"] += 1
      continue
    xs.append(result[0])
    ys.append(result[1])
    keys += [key] * len(result[1])
  x = np.concatenate(xs) if xs else np.zeros((0, SIZE, SIZE, 3), np.uint8)
  y = np.concatenate(ys) if ys else np.zeros((0,), np.int32)
  stats["kept_boxes"] += len(y)
  stats["splits"][dst_split] = len(y)
  arrays = {"x": x, "y": y, "key": np.asarray(keys, dtype=str)}
  files.atomic_write(os.path.join(out, f"{dst_split}.npz"), lambda f: np.savez(f, **arrays))


def convert(src, out, *, seed=0, split_map=DEFAULT_SPLIT_MAP, lam=SLACK, workers=1):
  """Converts an MTSD folder into classification crops.

  Args:
    src: the official MTSD folder (``images/``, ``annotations/``, ``splits/``).
    out: output folder (created); receives ``<split>.npz``, ``label_map.json``, ``summary.json``.
    seed: seed of the eq. 16 slack draws. split_map: ``src=dst[,src=dst]`` (dst in train, val,
    test). lam: the slack lambda of eq. 16. workers: processes decoding images.

  Returns:
    The summary dict (kept and dropped boxes, skipped inputs, crops per split).

  Raises:
    UserError: `src` is not in the official layout, a split list is missing, a bad split map,
      an annotation that is not JSON, or no usable box at all (nothing is written then).
  """
  if not os.path.isdir(os.path.join(src, "annotations")) or \
      not os.path.isdir(os.path.join(src, "splits")):
    raise UserError(f"mtsd: {src!r} lacks annotations/ or splits/ (official MTSD layout)")
  stats = {"images_without_annotation": 0, "annotations_without_boxes": 0,
           "unreadable_images": 0, "dropped_boxes": {}, "kept_boxes": 0, "splits": {}}
  todo = _plan(src, split_map, stats)
  labels = sorted({obj["label"] for items in todo.values() for _, kept in items
                   for _, obj in kept})
  if not labels:
    raise UserError(f"mtsd: no usable boxes in {src!r} (all dropped or no annotations)")
  label_index = {name: i for i, name in enumerate(labels)}
  os.makedirs(out, exist_ok=True)
  pool = concurrent.futures.ProcessPoolExecutor(workers) if workers > 1 else None
  try:
    for dst_split, items in sorted(todo.items()):
      args = [(src, key, kept, label_index, seed, lam) for key, kept in items]
      results = (pool.map(_crop_star, args, chunksize=8) if pool
                 else map(_crop_star, args))
      _write_split(out, dst_split, items, results, stats)
  finally:
    if pool:
      pool.shutdown()
  files.write_json(os.path.join(out, "label_map.json"), {"labels": labels}, indent=1)
  files.write_json(os.path.join(out, "summary.json"), stats)
  logging.info("mtsd: %s", stats)
  return stats


def _crop_star(args):
  return crop_image(*args)


def label_names(path):
  """The label map written by `convert`: label i is ``label_names(path)[i]``."""
  file = os.path.join(os.path.expanduser(str(path)), "label_map.json")
  if not os.path.isfile(file):
    raise UserError(f"mtsd: {file!r} is missing; run jax-abstain-mtsd (mtsd.convert) first")
  with open(file) as f:
    return json.load(f)["labels"]


def load(split: str, path=None):
  """Loads converted crops: x float32 [N, 64, 64, 3] in [0, 1], y int32 [N]."""
  if path is None:
    raise UserError("mtsd: pass path= the --out folder of jax-abstain-mtsd (mtsd.convert)")
  file = os.path.join(os.path.expanduser(str(path)), f"{split}.npz")
  if not os.path.isfile(file):
    raise UserError(f"mtsd: {file!r} is missing; convert with jax-abstain-mtsd (mtsd.convert; "
                    f"split {split!r} comes from --split-map)")
  try:
    with np.load(file, allow_pickle=False) as data:
      x, y = data["x"], data["y"]
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f"mtsd: {file!r} is not a converted MTSD split ({e})") from None
  return x.astype(np.float32) / 255.0, y.astype(np.int32)
