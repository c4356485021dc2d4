"""Issue 16, item 5: image files load as value / (2^bits - 1) of their real bit depth, for every
mode Pillow returns, or are refused with one line; never clipped to 8 bits. The PNG and TIFF
files are written here (16-bit colour PNGs and 12-bit / signed TIFFs byte by byte, since
Pillow cannot write them), and the expected values are computed from the written integers."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jax_abstain import data
from jax_abstain.data import folder, images
from jax_abstain.errors import UserError

GREY16 = np.array([[0, 1000, 20000], [40000, 63000, 65535]], np.uint16)


def _png(path, arr, depth, color_type):
  """A PNG written byte by byte: `arr` [H, W(, C)] of `depth`-bit samples (8 or 16)."""
  h = arr.shape[0]
  dtype = ">u2" if depth == 16 else "u1"
  raw = b"".join(b"\x00" + np.ascontiguousarray(arr[y]).astype(dtype).tobytes() for y in range(h))

  def chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

  ihdr = struct.pack(">IIBBBBB", arr.shape[1], h, depth, color_type, 0, 0, 0)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                   + chunk(b"IEND", b""))


def _tiff(path, body: bytes, w, h, bits, sample_format=1):
  """A one-strip little-endian grey TIFF (BlackIsZero) written byte by byte."""
  entries = [(256, 3, w), (257, 3, h), (258, 3, bits), (259, 3, 1), (262, 3, 1), (273, 4, 0),
             (277, 3, 1), (278, 3, h), (279, 4, len(body)), (339, 3, sample_format)]
  offset = 8 + 2 + 12 * len(entries) + 4
  out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
  for tag, kind, value in entries:
    value = offset if tag == 273 else value
    packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
    out += struct.pack("<HHI", tag, kind, 1) + packed
  path.write_bytes(out + struct.pack("<I", 0) + body)


def _load(path, **kw):
  return folder.read_image(str(path), **kw)


def test_16_bit_grey_png_is_value_over_65535(tmp_path):
  # The case: values 0..63000 used to load as 1.0 (Pillow clipped them to 8 bits).
  _png(tmp_path / "g.png", GREY16, 16, 0)
  x = _load(tmp_path / "g.png", channels=1)
  assert x.dtype == np.float32 and x.shape == (2, 3, 1)
  np.testing.assert_allclose(x[..., 0], GREY16 / 65535, rtol=0, atol=1e-7)
  rgb = _load(tmp_path / "g.png", channels=3)       # the grey value in every channel
  np.testing.assert_allclose(rgb, np.repeat(GREY16[..., None] / 65535, 3, axis=2), atol=1e-7)


@pytest.mark.parametrize("order", ["<u2", ">u2"])
def test_16_bit_tiff_either_byte_order(tmp_path, order):
  mode = "I;16" if order == "<u2" else "I;16B"
  Image.frombytes(mode, (3, 2), GREY16.astype(order).tobytes()).save(tmp_path / "g.tif")
  np.testing.assert_allclose(_load(tmp_path / "g.tif", channels=1)[..., 0], GREY16 / 65535,
                             atol=1e-7)


def test_12_bit_tiff_is_value_over_4095(tmp_path):
  # Pillow opens it as mode I;16 holding 0..4095; dividing by 65535 would make it near black.
  values = np.array([[0, 1000], [2000, 4095]])
  packed = bytearray()
  for a, b in values:          # two 12-bit samples in three bytes, most significant bits first
    packed += bytes([a >> 4, ((a & 0xF) << 4) | (b >> 8), b & 0xFF])
  _tiff(tmp_path / "g12.tif", bytes(packed), 2, 2, 12)
  np.testing.assert_allclose(_load(tmp_path / "g12.tif", channels=1)[..., 0], values / 4095,
                             atol=1e-7)


def test_16_bit_resize_keeps_the_depth(tmp_path):
  _png(tmp_path / "flat.png", np.full((4, 6), 40000, np.uint16), 16, 0)
  x = _load(tmp_path / "flat.png", channels=1, size=(2, 3))
  np.testing.assert_allclose(x, np.full((2, 3, 1), 40000 / 65535), atol=1e-6)


def test_8_bit_modes_low_depths_and_palettes(tmp_path):
  Image.fromarray(np.array([[0, 128], [255, 7]], np.uint8)).save(tmp_path / "l.png")
  np.testing.assert_allclose(_load(tmp_path / "l.png", channels=1)[..., 0],
                             np.array([[0, 128], [255, 7]]) / 255, atol=1e-7)
  # A 2-bit grey PNG: samples 0, 1, 2, 3 are 0, 1/3, 2/3, 1.
  body = zlib.compress(b"".join(b"\x00" + bytes([0b00011011]) for _ in range(2)))
  ihdr = struct.pack(">IIBBBBB", 4, 2, 2, 0, 0, 0, 0)
  crc = lambda k, b: struct.pack(">I", zlib.crc32(k + b) & 0xFFFFFFFF)
  (tmp_path / "g2.png").write_bytes(
      b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc(b"IHDR", ihdr)
      + struct.pack(">I", len(body)) + b"IDAT" + body + crc(b"IDAT", body)
      + struct.pack(">I", 0) + b"IEND" + crc(b"IEND", b""))
  np.testing.assert_allclose(_load(tmp_path / "g2.png", channels=1)[0, :, 0],
                             [0, 1 / 3, 2 / 3, 1], atol=1e-7)
  bits = Image.new("1", (2, 1))
  bits.putdata([0, 1])
  bits.save(tmp_path / "b.png")
  np.testing.assert_array_equal(_load(tmp_path / "b.png", channels=1)[0, :, 0], [0.0, 1.0])
  pal = Image.new("P", (2, 1))
  pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
  pal.putdata([0, 1])
  pal.save(tmp_path / "p.png")
  np.testing.assert_allclose(_load(tmp_path / "p.png")[0], np.array([[10, 20, 30],
                                                                     [200, 100, 50]]) / 255)
  Image.new("RGBA", (1, 1), (40, 80, 120, 7)).save(tmp_path / "a.png")   # alpha is dropped
  np.testing.assert_allclose(_load(tmp_path / "a.png")[0, 0], np.array([40, 80, 120]) / 255)
  Image.new("CMYK", (1, 1), (0, 255, 255, 0)).save(tmp_path / "c.tif")   # Pillow: pure red
  np.testing.assert_allclose(_load(tmp_path / "c.tif")[0, 0], [1.0, 0.0, 0.0])


def test_16_bit_colour_png_within_one_step_of_value_over_65535(tmp_path):
  # Pillow keeps the high byte of 16-bit colour: (v >> 8) / 255, within 1/255 of v / 65535.
  rgb = np.stack([GREY16, GREY16 // 2, 65535 - GREY16], axis=-1)
  _png(tmp_path / "rgb16.png", rgb, 16, 2)
  x = _load(tmp_path / "rgb16.png")
  np.testing.assert_allclose(x, (rgb >> 8) / 255, atol=1e-7)
  assert np.abs(x - rgb / 65535).max() <= 1 / 255
  assert x[1, 1, 0] < 0.97                              # 63000, not clipped to white


def test_float_tiff_in_range_kept_else_refused(tmp_path):
  values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
  Image.fromarray(values).save(tmp_path / "f.tif")
  np.testing.assert_array_equal(_load(tmp_path / "f.tif", channels=1)[..., 0], values)
  Image.fromarray(values * 300).save(tmp_path / "big.tif")
  with pytest.raises(UserError, match=r"big.tif.*values in \[0, 300\].*expected values in"):
    _load(tmp_path / "big.tif")


@pytest.mark.parametrize("make,message", [
    ("i32", r"integer image \(32-bit signed\) has no fixed range"),
    ("s16", r"integer image \(16-bit signed\) has no fixed range"),
])
def test_integer_images_without_a_fixed_range_are_refused(tmp_path, make, message):
  path = tmp_path / f"{make}.tif"
  if make == "i32":
    im = Image.new("I", (2, 1))
    im.putdata([0, 70000])
    im.save(path)
  else:
    _tiff(path, np.array([0, -5], "<i2").tobytes(), 2, 1, 16, sample_format=2)
  with pytest.raises(UserError, match=message) as e:
    _load(path)
  assert len(str(e.value).splitlines()) == 1 and str(path) in str(e.value)


def test_folder_of_8_and_16_bit_images(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  _png(tmp_path / "a" / "deep.png", GREY16, 16, 0)
  Image.fromarray(np.full((2, 3), 51, np.uint8)).save(tmp_path / "b" / "flat.png")
  x, y = data.load("folder", "train", path=str(tmp_path), channels=1, test_share=0,
                   val_share=0)
  assert y.tolist() == [0, 1]
  np.testing.assert_allclose(x[0, ..., 0], GREY16 / 65535, atol=1e-7)
  np.testing.assert_allclose(x[1], np.full((2, 3, 1), 0.2), atol=1e-7)


def test_to_rgb8_rounds_by_depth(tmp_path):
  _png(tmp_path / "g.png", GREY16, 16, 0)
  with Image.open(tmp_path / "g.png") as im:
    out = np.asarray(images.to_rgb8(im))
  np.testing.assert_array_equal(out[..., 0], np.round(GREY16 / 65535 * 255))
