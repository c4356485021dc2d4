"""The CIFAR-10 AutoAugment policy (Cubuk et al. 2018), on the host with Pillow, seeded.

    rng = np.random.default_rng([seed, sample_idx])
    out = autoaugment.cifar10_policy(image_uint8, rng)     # uint8 [H, W, 3] -> uint8 [H, W, 3]
    out = autoaugment.apply_op(image_uint8, "rotate", 5, sign=-1)   # one operation

A sub-policy is picked uniformly from the 25 of the paper's CIFAR-10 table; each of its two
operations is then applied with its probability at its magnitude bin (0..9). Magnitudes map to
values as in the paper and in the widely used PyTorch port the authors' code builds on:
shear 0..0.3, translate 0..150/331 of the image width, rotate 0..30 degrees, colour/contrast/
sharpness/brightness enhancement factor 1 +- 0..0.9, posterize 8..4 bits, solarize threshold
256..0; geometric and enhancement operations take a random sign. Pixels uncovered by
geometric operations are filled with grey (128), as in the original implementation.
The authors also use this CIFAR-10 policy for CIFAR-100 (docs/design.md, appendix A9).
"""
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

FILL = (128, 128, 128)
NUM_BINS = 10

# (probability, operation, magnitude bin) pairs: the CIFAR-10 policy table of the paper.
CIFAR10_POLICY = (
    ((0.1, "invert", 7), (0.2, "contrast", 6)),
    ((0.7, "rotate", 2), (0.3, "translate_x", 9)),
    ((0.8, "sharpness", 1), (0.9, "sharpness", 3)),
    ((0.5, "shear_y", 8), (0.7, "translate_y", 9)),
    ((0.5, "autocontrast", 8), (0.9, "equalize", 2)),
    ((0.2, "shear_y", 7), (0.3, "posterize", 7)),
    ((0.4, "color", 3), (0.6, "brightness", 7)),
    ((0.3, "sharpness", 9), (0.7, "brightness", 9)),
    ((0.6, "equalize", 5), (0.5, "equalize", 1)),
    ((0.6, "contrast", 7), (0.6, "sharpness", 5)),
    ((0.7, "color", 7), (0.5, "translate_x", 8)),
    ((0.3, "equalize", 7), (0.4, "autocontrast", 8)),
    ((0.4, "translate_y", 3), (0.2, "sharpness", 6)),
    ((0.9, "brightness", 6), (0.2, "color", 8)),
    ((0.5, "solarize", 2), (0.0, "invert", 3)),
    ((0.2, "equalize", 0), (0.6, "autocontrast", 0)),
    ((0.2, "equalize", 8), (0.6, "equalize", 4)),
    ((0.9, "color", 9), (0.6, "equalize", 6)),
    ((0.8, "autocontrast", 4), (0.2, "solarize", 8)),
    ((0.1, "brightness", 3), (0.7, "color", 0)),
    ((0.4, "solarize", 5), (0.9, "autocontrast", 3)),
    ((0.9, "translate_y", 9), (0.7, "translate_y", 9)),
    ((0.9, "autocontrast", 2), (0.8, "solarize", 3)),
    ((0.8, "equalize", 8), (0.1, "invert", 3)),
    ((0.7, "translate_y", 9), (0.9, "autocontrast", 1)),
)

RANGES = {
    "shear_x": np.linspace(0, 0.3, NUM_BINS), "shear_y": np.linspace(0, 0.3, NUM_BINS),
    "translate_x": np.linspace(0, 150 / 331, NUM_BINS),
    "translate_y": np.linspace(0, 150 / 331, NUM_BINS),
    "rotate": np.linspace(0, 30, NUM_BINS),
    "color": np.linspace(0.0, 0.9, NUM_BINS), "contrast": np.linspace(0.0, 0.9, NUM_BINS),
    "sharpness": np.linspace(0.0, 0.9, NUM_BINS), "brightness": np.linspace(0.0, 0.9, NUM_BINS),
    "posterize": np.round(np.linspace(8, 4, NUM_BINS)).astype(int),
    "solarize": np.linspace(256, 0, NUM_BINS),
    "autocontrast": np.zeros(NUM_BINS), "equalize": np.zeros(NUM_BINS),
    "invert": np.zeros(NUM_BINS),
}
SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate",
          "color", "contrast", "sharpness", "brightness"}
_ENHANCERS = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
              "sharpness": ImageEnhance.Sharpness, "brightness": ImageEnhance.Brightness}


def op_value(name: str, bin_: int, sign: int = 1):
  """The value an operation uses at magnitude bin `bin_` (signed where the op is)."""
  value = RANGES[name][bin_]
  return value * sign if name in SIGNED else value


def _pil_op(im, name, v):
  """Applies operation `name` with value `v` to a PIL RGB image."""
  w, h = im.size
  if name == "shear_x":   # out(x, y) = in(x + v*y, y)
    return im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0), Image.BICUBIC, fillcolor=FILL)
  if name == "shear_y":   # out(x, y) = in(x, y + v*x)
    return im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0), Image.BICUBIC, fillcolor=FILL)
  if name == "translate_x":  # out(x, y) = in(x + v*w, y)
    return im.transform(im.size, Image.AFFINE, (1, 0, v * w, 0, 1, 0), fillcolor=FILL)
  if name == "translate_y":
    return im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v * h), fillcolor=FILL)
  if name == "rotate":    # counter-clockwise by v degrees about the centre
    return im.rotate(v, fillcolor=FILL)
  if name in _ENHANCERS:  # blend with a degenerate image: factor 0 -> degenerate, 1 -> input
    return _ENHANCERS[name](im).enhance(1 + v)
  if name == "posterize":  # keep the v most significant bits
    return ImageOps.posterize(im, int(v))
  if name == "solarize":  # invert pixels >= threshold v
    return ImageOps.solarize(im, v)
  if name == "autocontrast":  # stretch each channel to 0..255
    return ImageOps.autocontrast(im)
  if name == "equalize":
    return ImageOps.equalize(im)
  if name == "invert":
    return ImageOps.invert(im)
  raise KeyError(f"unknown AutoAugment operation {name!r}")


def apply_op(image, name: str, bin_: int, sign: int = 1):
  """Applies one operation at magnitude bin `bin_` to uint8 [H, W, 3]; returns uint8."""
  im = Image.fromarray(np.asarray(image, np.uint8))
  return np.asarray(_pil_op(im, name, op_value(name, bin_, sign)), np.uint8)


def apply_subpolicy(image, index: int, rng):
  """Applies sub-policy `index` of the CIFAR-10 table (each op with its probability)."""
  im = Image.fromarray(np.asarray(image, np.uint8))
  for prob, name, bin_ in CIFAR10_POLICY[index]:
    # Draw both numbers every time so the random stream does not depend on the outcome.
    apply, sign = rng.uniform() < prob, 1 if rng.uniform() < 0.5 else -1
    if apply:
      im = _pil_op(im, name, op_value(name, bin_, sign))
  return np.asarray(im, np.uint8)


def cifar10_policy(image, rng):
  """AutoAugment CIFAR-10: uint8 [H, W, 3] -> uint8 [H, W, 3], randomness from `rng`."""
  return apply_subpolicy(image, int(rng.integers(len(CIFAR10_POLICY))), rng)
