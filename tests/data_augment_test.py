"""Tests for augment.py and autoaugment.py: every AutoAugment operation on small images
against its definition, every sub-policy reachable and composed as the table says, and the
per-example augmentations (crop/flip, jitter, affine) seeded and shape/range preserving."""
import numpy as np
import pytest
from PIL import Image

from jax_abstain import data
from jax_abstain.cli import augment as augment_cli
from jax_abstain.data import augment
from jax_abstain.data import autoaugment as aa
from jax_abstain.errors import UserError


def _img(h=8, w=8, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_invert_posterize_solarize():
  x = _img()
  np.testing.assert_array_equal(aa.apply_op(x, "invert", 0), 255 - x)
  for b in range(10):
    bits = aa.RANGES["posterize"][b]
    np.testing.assert_array_equal(aa.apply_op(x, "posterize", b),
                                  x & np.uint8((0xFF << (8 - bits)) & 0xFF))
    t = aa.RANGES["solarize"][b]
    np.testing.assert_array_equal(aa.apply_op(x, "solarize", b), np.where(x >= t, 255 - x, x))


def test_autocontrast_and_equalize():
  x = (_img() // 4 + 40).astype(np.uint8)    # values 40..103
  out = aa.apply_op(x, "autocontrast", 0).astype(float)
  lo, hi = x.reshape(-1, 3).min(0), x.reshape(-1, 3).max(0)
  np.testing.assert_allclose(out, (x - lo) * 255.0 / (hi - lo), atol=1.0)
  ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
  np.testing.assert_array_equal(aa.apply_op(ramp, "equalize", 0), ramp)  # already uniform
  # Four equally frequent levels map through the cumulative histogram to 0, 85, 171, 255.
  four = np.repeat(np.array([50, 100, 150, 200], np.uint8), 256).reshape(32, 32, 1).repeat(3, -1)
  eq = aa.apply_op(four, "equalize", 0)
  np.testing.assert_allclose(np.unique(eq), [0, 85, 171, 255], atol=1)


@pytest.mark.parametrize("sign", [1, -1])
def test_enhancements_blend_with_their_degenerate_image(sign):
  x = _img(seed=1).astype(float)
  gray = x @ np.array([299, 587, 114]) / 1000   # ITU-R 601-2 luma, as Pillow's "L"
  for b in (3, 9):
    f = 1 + sign * aa.RANGES["brightness"][b]
    np.testing.assert_allclose(aa.apply_op(x, "brightness", b, sign), np.clip(x * f, 0, 255),
                               atol=1.0)
    np.testing.assert_allclose(
        aa.apply_op(x, "color", b, sign), np.clip(gray[..., None] + f * (x - gray[..., None]),
                                                  0, 255), atol=1.5)
    mean = np.round(gray.mean())
    np.testing.assert_allclose(aa.apply_op(x, "contrast", b, sign),
                               np.clip(mean + f * (x - mean), 0, 255), atol=1.5)
  flat = np.full((8, 8, 3), 77, np.uint8)
  np.testing.assert_array_equal(aa.apply_op(flat, "sharpness", 9, sign), flat)


@pytest.mark.parametrize("sign", [1, -1])
def test_translate(sign):
  x, w = _img(32, 32, seed=2), 32
  shift = int(round(aa.RANGES["translate_x"][3] * w))   # 4.83 px, nearest -> 5
  out_x, out_y = aa.apply_op(x, "translate_x", 3, sign), aa.apply_op(x, "translate_y", 3, sign)
  if sign == 1:   # out(x, y) = in(x + v*w, y), grey where the source is outside
    np.testing.assert_array_equal(out_x[:, :w - shift], x[:, shift:])
    np.testing.assert_array_equal(out_x[:, w - shift:], 128)
    np.testing.assert_array_equal(out_y[:w - shift], x[shift:])
  else:
    np.testing.assert_array_equal(out_x[:, shift:], x[:, :w - shift])
    np.testing.assert_array_equal(out_x[:, :shift], 128)
    np.testing.assert_array_equal(out_y[shift:], x[:w - shift])


def test_shear_follows_its_affine_map():
  v = aa.RANGES["shear_x"][9]
  cols = np.arange(40, dtype=float) * 3 + 20   # a ramp along x: value = 3*col + 20
  x = np.broadcast_to(cols[None, :, None], (24, 40, 3)).astype(np.uint8)
  out = aa.apply_op(x, "shear_x", 9).astype(float)
  yy, xx = np.mgrid[0:24, 0:40]
  expected = 3 * (xx + v * (yy + 0.5)) + 20    # out(x, y) = in(x + v*y, y), pixel centres
  inside = (xx + v * (yy + 0.5) < 37) & (xx > 1)
  np.testing.assert_allclose(out[..., 0][inside], expected[inside], atol=1.5)
  out_y = aa.apply_op(x.transpose(1, 0, 2).copy(), "shear_y", 9).astype(float)
  np.testing.assert_allclose(out_y[..., 0].T[inside], expected[inside], atol=1.5)


@pytest.mark.parametrize("sign,row", [(1, 11), (-1, 21)])
def test_rotate_counter_clockwise_about_centre(sign, row):
  x = np.zeros((33, 33, 3), np.uint8)
  x[16, 26] = 255                     # 10 px right of the centre (16.5, 16.5)
  out = aa.apply_op(x, "rotate", 9, sign)   # 30 degrees
  assert out[row, 25].tolist() == [255, 255, 255] and (out[:, :, 0] == 255).sum() == 1
  assert out[0, 0].tolist() == [128, 128, 128]   # uncovered corner is grey
  np.testing.assert_array_equal(aa.apply_op(x, "rotate", 0), x)


class _AlwaysApply:
  """A stand-in generator: every probability test passes, every sign is +1."""

  def uniform(self):
    return 0.0


def test_every_subpolicy_composes_its_two_operations():
  x = _img(16, 16, seed=3)
  for i, ((p1, op1, b1), (p2, op2, b2)) in enumerate(aa.CIFAR10_POLICY):
    expected = x
    for p, op, b in ((p1, op1, b1), (p2, op2, b2)):
      if p > 0:
        expected = aa.apply_op(expected, op, b, 1)
    np.testing.assert_array_equal(aa.apply_subpolicy(x, i, _AlwaysApply()), expected, err_msg=op1)


def test_all_subpolicies_reachable(monkeypatch):
  assert len(aa.CIFAR10_POLICY) == 25
  seen = []
  monkeypatch.setattr(aa, "apply_subpolicy", lambda image, i, rng: seen.append(i) or image)
  for seed in range(400):
    aa.cifar10_policy(_img(), np.random.default_rng(seed))
  assert set(seen) == set(range(25))


def test_crop_flip_is_a_window_of_the_padded_image():
  x = np.random.default_rng(0).uniform(size=(8, 8, 3)).astype(np.float32)
  padded = np.pad(x, ((4, 4), (4, 4), (0, 0)))
  flips = 0
  for seed in range(20):
    out = augment.crop_flip(x, np.random.default_rng(seed))
    windows = [padded[dy:dy + 8, dx:dx + 8] for dy in range(9) for dx in range(9)]
    plain = any(np.array_equal(out, w) for w in windows)
    flipped = any(np.array_equal(out[:, ::-1], w) for w in windows)
    assert plain or flipped
    flips += flipped and not plain
  assert 0 < flips < 20


@pytest.mark.parametrize("name", sorted(augment.AUGMENTATIONS))
def test_augmentations_are_seeded_and_keep_shape_and_range(name):
  x = np.random.default_rng(1).uniform(size=(32, 32, 3)).astype(np.float32)
  fn = augment.get(name)
  a, b = fn(x, np.random.default_rng(7)), fn(x, np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)
  assert a.shape == x.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
  if name != "none":
    assert any(not np.array_equal(fn(x, np.random.default_rng(s)), a) for s in range(8, 12))
  g = fn(x[..., :1], np.random.default_rng(7))   # grayscale works too
  assert g.shape == (32, 32, 1) and g.dtype == np.float32


def test_identity_settings_and_errors(tmp_path):
  x = np.random.default_rng(2).uniform(size=(16, 16, 3)).astype(np.float32)
  tol = 0.5 / 255 + 1e-6   # uint8 quantisation
  np.testing.assert_allclose(augment.rotate(x, np.random.default_rng(0), 0.0), x, atol=tol)
  np.testing.assert_allclose(augment.color_jitter(x, np.random.default_rng(0), 0.0), x, atol=tol)
  hue = augment.color_jitter(np.full((2, 2, 3), [0.8, 0.4, 0.2], np.float32),
                             np.random.default_rng(0), 0.1)
  assert np.ptp(hue.reshape(-1, 3), 0).max() == 0   # a flat image stays flat
  with pytest.raises(UserError, match="unknown 'nope'"):
    augment.get("nope")
  with pytest.raises(UserError, match="1 or 3 channels"):
    augment.autoaugment(np.zeros((4, 4, 2), np.float32), np.random.default_rng(0))
  augment.save_grid(np.stack([x] * 3), "autoaugment", tmp_path / "g.png", examples=3, variants=2)
  assert (tmp_path / "g.png").stat().st_size > 0


def test_command_line_grid(tmp_path, capsys):
  # 8 examples of the 8x8 digits, each with 8 augmented copies: tiles of 10x10 pixels (1-pixel
  # border) scaled 4x -> 9 * 40 columns, 8 * 40 rows; the first tile is the first example.
  out = tmp_path / "grid.png"
  assert augment_cli.main(["--data", "digits", "--aug", "stdaug", "--out", str(out)]) == 0
  assert capsys.readouterr().out.strip() == str(out)
  grid = np.asarray(Image.open(out))
  assert grid.shape == (8 * 40, 9 * 40)
  x, _ = data.load("digits", "train")
  np.testing.assert_array_equal(grid[4:36:4, 4:36:4], augment.to_uint8(x[0, ..., 0]))


@pytest.mark.parametrize("args, message", [
    (["--aug", "nope"], "augmentation: unknown 'nope'"),
    (["--data", "synthetic"], "--data synthetic: not an image set"),
    (["--data", "nope"], "unknown data set 'nope'"),
])
def test_command_line_bad_input(tmp_path, capsys, args, message):
  out = tmp_path / "grid.png"
  with pytest.raises(SystemExit) as e:
    augment_cli.main(args + ["--out", str(out)])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and err.count("\n") == 0 and message in err, err
  assert not out.exists()
