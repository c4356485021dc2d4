"""Seeded per-example image augmentation (numpy + Pillow), named as in the authors' scripts.

    fn = augment.get("autoaugment")                 # or crop_flip, crop_rotate, stdaug, ...
    out = fn(image, np.random.default_rng([seed, sample_idx]))   # float32 [H, W, C] in [0, 1]
    augment.save_grid(x, "stdaug", "grid.png")      # a PNG of examples and augmented copies
    jax-abstain-augment --data digits --aug stdaug --out grid.png    # the same, command line

Every augmentation maps one float32 [H, W, C] image in [0, 1] and a `numpy.random.Generator`
to an image of the same shape, dtype and range, so it is reproducible per example and
independent of batching, workers or resuming. The names follow the authors' scripts
(docs/design.md, appendix A9):

  none         identity
  crop_flip    CIFAR base: random crop from the 4-pixel zero-padded image, horizontal flip 0.5
  autoaugment  crop_flip, then the CIFAR-10 AutoAugment policy (also used for CIFAR-100)
  crop_rotate  MTSD/SBB base: random crop (padding H/8), rotation uniform in +-15 degrees
  stdaug       MTSD "standard augmentation": crop, ColorJitter(0.1, 0.1, 0.1, 0.1),
               RandomAffine(15 degrees, translate 0.1)
  stdaug_flip  SBB: stdaug plus a horizontal flip 0.5
Colour and geometric operations run on the image quantised to uint8 (Pillow), so they add at
most 1/510 rounding error; crop and flip are exact.
"""
import numpy as np
from PIL import Image, ImageEnhance

from jax_abstain.data import autoaugment as aa
from jax_abstain.errors import UserError


def to_uint8(image):
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_float(image):
  return np.asarray(image, np.float32) / 255.0


def _pil(image):
  """float [H, W, C] -> PIL image (RGB or L)."""
  arr = to_uint8(image)
  return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def _from_pil(im, channels):
  arr = np.asarray(im, np.uint8)
  return to_float(arr.reshape(arr.shape[0], arr.shape[1], channels))


def random_crop(image, rng, pad: int = 4):
  """Crops an [H, W, C] window at a uniform offset from the image zero-padded by `pad`."""
  h, w, c = image.shape
  # Filled by hand: np.pad costs ~10x more than the rest of this function.
  padded = np.zeros((h + 2 * pad, w + 2 * pad, c), image.dtype)
  padded[pad:pad + h, pad:pad + w] = image
  dy, dx = rng.integers(0, 2 * pad + 1, size=2)
  return padded[dy:dy + h, dx:dx + w]


def random_flip(image, rng):
  """Mirrors left-right with probability 0.5."""
  return image[:, ::-1] if rng.uniform() < 0.5 else image


def crop_flip(image, rng):
  return np.ascontiguousarray(random_flip(random_crop(image, rng, 4), rng))


def autoaugment(image, rng):
  """crop_flip followed by the CIFAR-10 AutoAugment policy.

  Grayscale [H, W, 1] images go through as three equal channels; every policy operation treats
  the channels alike, so they stay equal and channel 0 is returned.
  """
  c = image.shape[-1]
  if c not in (1, 3):
    raise UserError(f"autoaugment needs 1 or 3 channels, got {c}")
  rgb = to_uint8(crop_flip(image, rng))
  out = to_float(aa.cifar10_policy(np.repeat(rgb, 3, -1) if c == 1 else rgb, rng))
  return out[..., :1] if c == 1 else out


def rotate(image, rng, degrees: float = 15.0, translate: float = 0.0):
  """RandomAffine: rotation U[-degrees, degrees], shift up to `translate` of the size, 0 fill."""
  h, w, c = image.shape
  angle = rng.uniform(-degrees, degrees)
  tx = int(round(rng.uniform(-translate * w, translate * w)))
  ty = int(round(rng.uniform(-translate * h, translate * h)))
  return _from_pil(_pil(image).rotate(angle, translate=(tx, ty)), c)


def crop_rotate(image, rng):
  return rotate(random_crop(image, rng, max(1, image.shape[0] // 8)), rng, 15.0)


def color_jitter(image, rng, strength: float = 0.1):
  """ColorJitter(b, c, s, h = strength): factors U[1-s, 1+s], hue shift U[-s, s] of a turn,
  applied in a random order (as torchvision does). Saturation and hue need RGB."""
  c = image.shape[-1]
  im = _pil(image)
  factors = rng.uniform(1 - strength, 1 + strength, size=3)
  hue = rng.uniform(-strength, strength)
  for op in rng.permutation(4):
    if op == 0:
      im = ImageEnhance.Brightness(im).enhance(factors[0])
    elif op == 1:
      im = ImageEnhance.Contrast(im).enhance(factors[1])
    elif op == 2 and c == 3:
      im = ImageEnhance.Color(im).enhance(factors[2])
    elif op == 3 and c == 3 and hue != 0:
      # Pillow's 8-bit HSV, as torchvision's adjust_hue does on the PIL images the authors'
      # pipeline feeds it (float HSV would be 20x slower). Its round trip is lossy (a few
      # levels), hence skipped when there is no shift.
      hsv = np.asarray(im.convert("HSV")).copy()
      hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(hue * 255))) % 256
      im = Image.fromarray(hsv, "HSV").convert("RGB")
  return _from_pil(im, c)


def stdaug(image, rng, flip: bool = False):
  out = random_crop(image, rng, max(1, image.shape[0] // 8))
  if flip:
    out = random_flip(out, rng)
  return rotate(color_jitter(np.ascontiguousarray(out), rng), rng, 15.0, 0.1)


AUGMENTATIONS = {
    "none": lambda image, rng: image,
    "crop_flip": crop_flip,
    "autoaugment": autoaugment,
    "crop_rotate": crop_rotate,
    "stdaug": stdaug,
    "stdaug_flip": lambda image, rng: stdaug(image, rng, flip=True),
}


def get(name: str):
  """The augmentation `name`: ``fn(image float32 [H, W, C] in [0, 1], rng) -> same``."""
  if name not in AUGMENTATIONS:
    raise UserError(f"augmentation: unknown {name!r}; known: {', '.join(sorted(AUGMENTATIONS))}")
  return AUGMENTATIONS[name]


def grid(images, columns: int):
  """Tiles float [N, H, W, C] images into one uint8 [rows*(H+2), columns*(W+2), C] image."""
  n, h, w, c = images.shape
  rows = -(-n // columns)
  out = np.ones((rows * (h + 2), columns * (w + 2), c), np.float32)
  for i, image in enumerate(images):
    r, k = divmod(i, columns)
    out[r * (h + 2) + 1:r * (h + 2) + 1 + h, k * (w + 2) + 1:k * (w + 2) + 1 + w] = image
  return to_uint8(out)


def save_grid(x, name: str, path, *, examples=8, variants=8, seed=0, scale=4):
  """Writes a PNG: one row per example, the original then `variants` augmented copies.

  The examples are spread evenly over `x` (sets such as mnist5k are sorted by class).
  """
  fn = get(name)
  rows = []
  for i in np.unique(np.linspace(0, len(x) - 1, examples).astype(int)):
    rows.append(x[i])
    rows += [fn(x[i], np.random.default_rng([seed, i, v])) for v in range(variants)]
  tiles = grid(np.stack(rows), variants + 1)
  im = Image.fromarray(tiles[..., 0] if tiles.shape[-1] == 1 else tiles)
  im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(path)
