"""Tests for the MTSD conversion (paper appendix A.1) on a tiny fixture in the official layout:
flagged and other-sign boxes dropped, skips counted, eq. 16 slack, 64x64 crops, label map."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jax_abstain import data
from jax_abstain.cli import mtsd as mtsd_cli
from jax_abstain.data import mtsd
from jax_abstain.errors import UserError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _obj(label, box, **flags):
  props = {f: False for f in mtsd.FLAGS + ("highway", "barrier")}
  props.update({k.replace("_", "-"): v for k, v in flags.items()})
  xmin, ymin, xmax, ymax = box
  return {"key": "o", "label": label, "properties": props,
          "bbox": {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}}


def write_fixture(root):
  """Blue 200x160 images with red 20x16 signs at (90, 72); returns the src folder."""
  for d in ("images", "annotations", "splits"):
    os.makedirs(os.path.join(root, d))
  center = (90, 72, 110, 88)

  def image(key):
    arr = np.zeros((160, 200, 3), np.uint8)
    arr[...] = BLUE
    arr[72:88, 90:110] = RED
    Image.fromarray(arr).save(os.path.join(root, "images", f"{key}.jpg"), quality=98)

  def annotate(key, objects):
    with open(os.path.join(root, "annotations", f"{key}.json"), "w") as f:
      json.dump({"width": 200, "height": 160, "ispano": False, "objects": objects}, f)

  flagged = [_obj("warning--curve-left--g1", center, **{f.replace("-", "_"): True})
             for f in mtsd.FLAGS]
  image("a")
  annotate("a", [_obj("regulatory--stop--g1", center), _obj("other-sign", center)] + flagged)
  image("b")
  annotate("b", [_obj("warning--curve-left--g1", center),
                 _obj("regulatory--stop--g1", (0, 0, 30, 30))])   # slack clipped at the corner
  image("c")
  annotate("c", [])                                   # annotation without boxes
  image("d")                                          # listed, no annotation file
  with open(os.path.join(root, "images", "e.jpg"), "wb") as f:
    f.write(b"not a jpeg")                            # unreadable image
  annotate("e", [_obj("regulatory--stop--g1", center)])
  image("v")
  annotate("v", [_obj("regulatory--yield--g1", center)])
  with open(os.path.join(root, "splits", "train.txt"), "w") as f:
    f.write("a\nb\nc\nd\ne\n")
  with open(os.path.join(root, "splits", "val.txt"), "w") as f:
    f.write("v\n")
  return root


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  src = write_fixture(str(tmp_path_factory.mktemp("mtsd_src")))
  out = str(tmp_path_factory.mktemp("mtsd_out"))
  stats = mtsd.convert(src, out, seed=3)
  return src, out, stats


def test_command_line_writes_what_convert_writes(converted, tmp_path, capsys):
  src, out, stats = converted
  assert mtsd_cli.main(["--src", src, "--out", str(tmp_path / "cli"), "--seed", "3"]) == 0
  assert json.loads(capsys.readouterr().out) == stats      # the summary, printed as JSON
  for split in ("train", "test"):
    with np.load(os.path.join(out, f"{split}.npz")) as a, \
        np.load(str(tmp_path / "cli" / f"{split}.npz")) as b:
      for k in ("x", "y", "key"):
        np.testing.assert_array_equal(a[k], b[k])
  assert mtsd.label_names(str(tmp_path / "cli")) == mtsd.label_names(out)


def test_flags_and_skips_are_counted(converted):
  _, _, stats = converted
  assert stats["dropped_boxes"] == {**{f: 1 for f in mtsd.FLAGS}, "other-sign": 1}
  assert stats["images_without_annotation"] == 1
  assert stats["annotations_without_boxes"] == 1
  assert stats["unreadable_images"] == 1
  assert stats["splits"] == {"train": 3, "test": 1} and stats["kept_boxes"] == 4


def test_crops_labels_and_label_map(converted):
  _, out, _ = converted
  labels = ["regulatory--stop--g1", "regulatory--yield--g1", "warning--curve-left--g1"]
  assert mtsd.label_names(out) == labels
  with np.load(os.path.join(out, "train.npz"), allow_pickle=False) as f:
    x, y, keys = f["x"], f["y"], f["key"]
  assert x.shape == (3, 64, 64, 3) and x.dtype == np.uint8
  assert y.tolist() == [0, 2, 0] and keys.tolist() == ["a", "b", "b"]
  # lambda = 1 doubles width and height: the sign covers about a quarter of a centred crop.
  for crop in x[:2]:
    red = (crop[..., 0] > 128) & (crop[..., 2] < 128)
    assert 0.2 < red.mean() < 0.3
  xt, yt = data.load("mtsd", "test", path=out)
  assert xt.shape == (1, 64, 64, 3) and xt.dtype == np.float32 and yt.tolist() == [1]
  assert 0 <= xt.min() and xt.max() <= 1
  with pytest.raises(UserError, match="val.npz"):
    data.load("mtsd", "val", path=out)


def test_slack_box_is_eq16():
  box = {"xmin": 10.0, "ymin": 20.0, "xmax": 30.0, "ymax": 60.0}
  for seed in range(20):
    x0, y0, x1, y1 = mtsd.slack_box(box, np.random.default_rng(seed), lam=1.0)
    assert x1 - x0 == pytest.approx(40) and y1 - y0 == pytest.approx(80)
    assert x0 <= 10 and x1 >= 30 and y0 <= 20 and y1 >= 60
  ax, ay = np.random.default_rng(5).uniform(0, 1, 2)
  x0, y0, _, _ = mtsd.slack_box(box, np.random.default_rng(5), lam=0.5)
  assert (x0, y0) == pytest.approx((10 - 0.5 * ax * 20, 20 - 0.5 * ay * 40))


def test_seeded_and_worker_independent(converted, tmp_path):
  src, out, _ = converted
  with np.load(os.path.join(out, "train.npz")) as f:
    reference = f["x"]
  mtsd.convert(src, str(tmp_path / "w2"), seed=3, workers=2)
  with np.load(str(tmp_path / "w2" / "train.npz")) as f:
    np.testing.assert_array_equal(f["x"], reference)
  mtsd.convert(src, str(tmp_path / "s4"), seed=4)
  with np.load(str(tmp_path / "s4" / "train.npz")) as f:
    assert not np.array_equal(f["x"], reference)


def test_bad_inputs(tmp_path):
  with pytest.raises(UserError, match="official MTSD layout"):
    mtsd.convert(str(tmp_path), str(tmp_path / "out"))
  src = write_fixture(str(tmp_path / "src"))
  with pytest.raises(UserError, match="split-map"):
    mtsd.convert(src, str(tmp_path / "out"), split_map="train:train")
  with pytest.raises(UserError, match="missing"):
    mtsd.convert(src, str(tmp_path / "out"), split_map="test=test")
  with pytest.raises(UserError, match="run jax-abstain-mtsd"):
    mtsd.label_names(str(tmp_path))
  result = subprocess.run([sys.executable, "-m", "jax_abstain.cli.mtsd", "--src",
                           str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 2
  assert result.stderr.strip().count("\n") == 0 and "error: mtsd:" in result.stderr


def test_keep_reason():
  assert mtsd.keep_reason(_obj("regulatory--stop--g1", (1, 2, 5, 6))) is None
  assert mtsd.keep_reason(_obj("other-sign", (1, 2, 5, 6))) == "other-sign"
  assert mtsd.keep_reason(_obj("a", (1, 2, 5, 6), out_of_frame=True)) == "out-of-frame"
  assert mtsd.keep_reason(_obj("a", (5, 2, 1, 6))) == "degenerate-or-wrapping"
  wrapping = _obj("a", (190, 2, 10, 6))
  wrapping["bbox"]["cross_boundary"] = {"left": {}, "right": {}}   # panorama seam
  assert mtsd.keep_reason(wrapping) == "degenerate-or-wrapping"
  assert mtsd.keep_reason({"label": "a", "properties": {}}) == "no-bbox"
