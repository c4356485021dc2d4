"""Image files to float arrays in [0, 1], scaled by each image's real bit depth.

    with PIL.Image.open("scan.png") as im:
      x = images.decode(im, channels=1, size=(64, 64))   # float32 [64, 64, 1] in [0, 1]
    rgb8 = images.to_rgb8(im)                            # a PIL "RGB" image, 8 bits

`decode` is the one place that turns what Pillow opens into model input (the class-folder
loader uses it; the MTSD conversion uses `to_rgb8`). x = value / (2^bits - 1), never clipped:

  * 8-bit modes (``1``, ``L``, ``P``, ``LA``, ``PA``, ``RGB``, ``RGBA``, ``RGBX``, ``RGBa``,
    ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``): Pillow's conversion to RGB (or to L, luma
    ITU-R 601-2, for ``channels=1``), then / 255. Alpha is dropped (as torchvision's folder
    loader does); palettes give their colours; 1-, 2- and 4-bit PNGs are already spread to
    0..255 by Pillow.
  * Integer grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` and ``I``): the decoder's raw mode
    gives the stored depth, so a 16-bit PNG is / 65535 and a 12-bit TIFF (mode ``I;16``, raw
    ``I;12``) / 4095; unsigned data of at most 16 bits is divided by 2^bits - 1, and values
    beyond it are refused. Signed or 32-bit integer data has no fixed range and is refused.
    ``channels=3`` repeats the grey value.
  * 32-bit float ``F``: values already in [0, 1] are kept; any other range (or NaN) is refused.
  * Pillow itself reduces 16-bit colour PNGs (``RGB;16B``, ``RGBA;16B``, ``LA;16B``) to their
    high byte, i.e. (value >> 8) / 255, which is within 1/255 of value / 65535.

Anything else is refused with one line. Resizing (bilinear) happens after scaling, on the
float values, except for 8-bit images, which Pillow resizes in 8 bits as before.
"""
import re

import numpy as np
from PIL import Image

from jax_abstain.errors import UserError

EIGHT_BIT_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr",
                   "LAB", "HSV")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_INT_RAWMODE = re.compile(r"^I(?:;(\d+)([A-Z]*))?$")


def _raw_mode(im) -> str:
  """The decoder raw mode of a not yet loaded image ("" once loaded or unknown)."""
  for tile in getattr(im, "tile", None) or ():
    args = tile[3] if len(tile) > 3 else None
    raw = args[0] if isinstance(args, tuple) and args else args
    if isinstance(raw, str):
      return raw
  return ""


def integer_depth(im):
  """(bits, signed) of the samples of an integer image (modes ``I`` and ``I;16*``) from its
  raw mode (``I;16B`` -> (16, False), ``I;12`` -> (12, False), ``I;16S`` -> (16, True),
  ``I;32S`` or ``I`` -> (32, True)), or None when unknown (e.g. an image already loaded)."""
  match = _INT_RAWMODE.match(_raw_mode(im))
  if match is None:
    return None
  bits = int(match.group(1)) if match.group(1) else 32
  return bits, "S" in (match.group(2) or "") or bits == 32


def _scaled(im) -> np.ndarray:
  """float64 [H, W] in [0, 1] of a one-channel image that is not 8-bit."""
  mode = im.mode
  if mode in SIXTEEN_BIT_MODES or mode == "I":
    depth = integer_depth(im) or ((16, False) if mode in SIXTEEN_BIT_MODES else None)
    if depth is None or depth[1] or depth[0] > 16:
      what = "of unknown depth" if depth is None else (
          f"{depth[0]}-bit {'signed' if depth[1] else 'unsigned'}")
      raise UserError(f"integer image ({what}) has no fixed range; save it as 8- or 16-bit")
    top = 2 ** depth[0] - 1
    values = np.asarray(im, np.float64)
    if values.min(initial=0) < 0 or values.max(initial=0) > top:
      raise UserError(f"{depth[0]}-bit image holds values outside 0..{top}")
    return values / top
  if mode == "F":
    values = np.asarray(im, np.float64)
    if not np.all(np.isfinite(values)) or values.min(initial=0) < 0 or values.max(initial=0) > 1:
      raise UserError(f"floating-point image with values in [{np.nanmin(values):.4g}, "
                      f"{np.nanmax(values):.4g}] (or NaN); expected values in [0, 1]")
    return values
  raise UserError(f"unsupported image mode {mode!r}")


def decode(im, *, channels: int = 3, size=None) -> np.ndarray:
  """Decodes an opened Pillow image at its real bit depth.

  Args:
    im: a `PIL.Image.Image` as returned by ``Image.open`` (not yet loaded, so that the depth
      of ``I`` mode images is known).
    channels: 3 (RGB) or 1 (grey).
    size: (H, W) to resize to (bilinear), or None.

  Returns:
    float32 [H, W, channels] in [0, 1].

  Raises:
    UserError: a mode without a fixed range or one that cannot be converted (one line).
  """
  if im.mode in EIGHT_BIT_MODES:
    try:
      im = im.convert("RGB" if channels == 3 else "L")
    except ValueError as e:
      raise UserError(f"cannot convert image mode {im.mode!r} ({e})") from None
    if size is not None:
      im = im.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    arr = np.asarray(im, np.uint8)
    return arr.reshape(arr.shape[0], arr.shape[1], channels).astype(np.float32) / 255.0
  grey = _scaled(im).astype(np.float32)
  if size is not None:
    # Bilinear weights are convex: the clip only removes float rounding beyond [0, 1].
    resized = Image.fromarray(grey).resize((int(size[1]), int(size[0])), Image.BILINEAR)
    grey = np.asarray(resized, np.float32).clip(0.0, 1.0)
  return np.repeat(grey[:, :, None], channels, axis=2)


def to_rgb8(im):
  """An 8-bit ``RGB`` Pillow image of `im`: Pillow's conversion for 8-bit modes, else
  `decode` rounded to 0..255 (scaled by the real depth, never clipped at 255)."""
  if im.mode in EIGHT_BIT_MODES:
    return im.convert("RGB")
  x = decode(im, channels=3)
  return Image.fromarray(np.round(x * 255.0).astype(np.uint8))
