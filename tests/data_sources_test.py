"""Tests for the data sources behind `jax_abstain.data.load`: CIFAR archives (written here in
the official format) and tfds (mock data), mnist5k/digits, image folders, and bad inputs."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from jax_abstain import data
from jax_abstain.data import cifar, folder, offline
from jax_abstain.errors import UserError
from tiny_cifar import write_cifar


@pytest.mark.parametrize("name,classes,train_n", [("cifar10", 10, 30), ("cifar100", 100, 6)])
def test_cifar_archive_and_folder(tmp_path, name, classes, train_n):
  archive, extracted = write_cifar(str(tmp_path), name)
  x, y = data.load(name, "train", path=archive)
  assert x.shape == (train_n, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
  assert 0 <= x.min() and x.max() <= 1 and 0 <= y.min() and y.max() < classes
  # The first image is constant (10, 20, 30): checks the channel-major -> NHWC transpose.
  np.testing.assert_allclose(x[0], np.broadcast_to(np.array([10, 20, 30]) / 255, (32, 32, 3)),
                             atol=1e-7)
  for p in (extracted, str(tmp_path)):   # the extracted folder, or the folder holding it
    x2, y2 = data.load(name, "train", path=p)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
  xt, yt = data.load(name, "test", path=archive)
  assert xt.shape == (6, 32, 32, 3) and yt.shape == (6,)


def test_cifar_bad_inputs(tmp_path):
  archive, _ = write_cifar(str(tmp_path / "ok"), "cifar10")
  with pytest.raises(UserError, match="does not exist"):
    data.load("cifar10", "train", path=str(tmp_path / "missing.tar.gz"))
  with pytest.raises(UserError, match="train and test only"):
    data.load("cifar10", "val", path=archive)
  corrupt = tmp_path / "corrupt.tar.gz"
  corrupt.write_bytes(b"\x1f\x8b" + os.urandom(200))
  with pytest.raises(UserError, match="unreadable CIFAR archive"):
    data.load("cifar10", "train", path=str(corrupt))
  with pytest.raises(UserError, match="right CIFAR archive"):   # a CIFAR-10 archive as 100
    cifar.load_archive("cifar100", "train", archive)
  with pytest.raises(UserError) as e:
    data.load("nope", "train")
  assert "\n" not in str(e.value)


class _Evil:
  def __reduce__(self):
    return (os.system, ("touch pwned",))


def test_cifar_restricted_unpickler_refuses_code(tmp_path):
  extracted = tmp_path / "cifar-10-batches-py"
  extracted.mkdir()
  (extracted / "test_batch").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    with pytest.raises(UserError, match="forbidden global"):
      data.load("cifar10", "test", path=str(tmp_path))
  finally:
    os.chdir(cwd)
  assert not (tmp_path / "pwned").exists()


def test_cifar_wrong_shapes(tmp_path):
  extracted = tmp_path / "cifar-10-batches-py"
  extracted.mkdir()
  bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
  (extracted / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
  with pytest.raises(UserError, match="expected uint8 data"):
    data.load("cifar10", "test", path=str(extracted))


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_tfds_source_with_mock_data(tmp_path, name, classes):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=5):
    x, y = data.load(name, "test", path=str(tmp_path), source="tfds")
  assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
  assert 0 <= x.min() and x.max() <= 1 and 0 <= y.min() and y.max() < classes


def test_tfds_not_prepared_is_a_user_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(UserError, match="tfds build cifar10"):
    data.load("cifar10", "train", path=str(tmp_path), source="tfds")


def test_offline_sets_fixed_split():
  for name, shape, counts in (("mnist5k", (28, 28, 1), (4000, 1000)),
                              ("digits", (8, 8, 1), (1442, 355))):
    (xtr, ytr), (xte, yte) = data.load(name, "train"), data.load(name, "test")
    assert (len(xtr), len(xte)) == counts and xtr.shape[1:] == shape == xte.shape[1:]
    for x, y in ((xtr, ytr), (xte, yte)):
      assert x.dtype == np.float32 and y.dtype == np.int32
      assert 0 <= x.min() and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    np.testing.assert_array_equal(data.load(name, "train")[1], ytr)   # fixed, not random
  y = np.array([0, 0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(offline.fixed_split(y, "test"), [4])  # 4 of 5, 2 of 2 train
  with pytest.raises(UserError):
    data.load("digits", "val")


def test_synthetic_unchanged():
  x, y = data.load("synthetic", "train")
  assert x.shape == (1000, 2) and np.bincount(y).tolist() == [485, 499, 16]
  assert data.load("synthetic", "test", n=10, seed=3)[0].shape == (10, 2)


@pytest.mark.parametrize("name", ["synthetic", "digits", "cifar10", "folder"])
def test_unknown_options_are_user_errors(name):
  with pytest.raises(UserError, match=f"data set '{name}': bad options"):
    data.load(name, "train", bogus=1)


def _write_images(root, classes, per_class, size=(6, 5), fmt="png"):
  rng = np.random.default_rng(0)
  for c in classes:
    os.makedirs(os.path.join(root, c), exist_ok=True)
    for i in range(per_class):
      arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
      Image.fromarray(arr).save(os.path.join(root, c, f"{i}.{fmt}"))


def test_folder_flat_layout_split(tmp_path):
  _write_images(str(tmp_path), ["crack", "ok", "squat"], 10)
  (tmp_path / "ok" / "notes.txt").write_text("not an image")
  parts = {s: data.load("folder", s, path=str(tmp_path)) for s in ("train", "val", "test")}
  assert [len(parts[s][1]) for s in ("train", "val", "test")] == [24, 3, 3]
  x, y = parts["train"]
  assert x.shape == (24, 6, 5, 3) and x.dtype == np.float32 and y.dtype == np.int32
  assert np.bincount(y).tolist() == [8, 8, 8]
  assert folder.class_names(str(tmp_path)) == ["crack", "ok", "squat"]
  files = [set(folder.split_files(str(tmp_path), s)[0]) for s in ("train", "val", "test")]
  assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
  assert len(set.union(*files)) == 30
  x2, _ = data.load("folder", "train", path=str(tmp_path), size=(4, 4), channels=1)
  assert x2.shape == (24, 4, 4, 1)


def test_folder_split_dirs_layout(tmp_path):
  _write_images(str(tmp_path / "train"), ["a", "b"], 3, fmt="jpg")
  _write_images(str(tmp_path / "test"), ["a", "b"], 2, fmt="png")
  x, y = data.load("folder", "test", path=str(tmp_path))
  assert x.shape == (4, 6, 5, 3) and y.tolist() == [0, 0, 1, 1]
  with pytest.raises(UserError, match="no val/ folder"):
    data.load("folder", "val", path=str(tmp_path))


def test_folder_bad_inputs(tmp_path):
  with pytest.raises(UserError, match="not a directory"):
    data.load("folder", "train", path=str(tmp_path / "missing"))
  _write_images(str(tmp_path), ["a"], 3)
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="has no images"):
    data.load("folder", "train", path=str(tmp_path))
  (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
  with pytest.raises(UserError, match="cannot read image .*broken.png"):
    data.load("folder", "train", path=str(tmp_path), test_share=0, val_share=0)
  os.remove(tmp_path / "empty" / "broken.png")
  Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "empty" / "big.png")
  with pytest.raises(UserError, match="different sizes"):
    data.load("folder", "train", path=str(tmp_path), test_share=0, val_share=0)


# Issue 16, item 4: hidden entries and operating-system metadata are never classes or images.

def test_hidden_folders_and_system_metadata_are_not_classes(tmp_path, caplog):
  _write_images(str(tmp_path), ["cat", "dog"], 3)
  # What notebooks, macOS, Windows and NAS boxes leave behind, with images inside (any of them
  # read as a class would shift the labels; an AppleDouble "._0.png" is not a PNG at all).
  _write_images(str(tmp_path), [".ipynb_checkpoints", "__MACOSX", "@eaDir",
                                "System Volume Information"], 1)
  for junk in (".DS_Store", "Thumbs.db", "desktop.ini", "cat/.DS_Store", "cat/._0.png",
               "dog/._1.png", "dog/Thumbs.db", "dog/.hidden.png", "__MACOSX/._cat"):
    (tmp_path / junk).write_bytes(b"\x00\x05\x16\x07 AppleDouble or other metadata")
  assert folder.class_names(str(tmp_path)) == ["cat", "dog"]
  with caplog.at_level("INFO"):
    x, y = data.load("folder", "train", path=str(tmp_path), test_share=0, val_share=0)
  assert x.shape == (6, 6, 5, 3) and y.tolist() == [0, 0, 0, 1, 1, 1]
  text = caplog.text
  assert "2 classes" in text and "cat, dog" in text
  assert "left out" in text and ".ipynb_checkpoints" in text and "__MACOSX" in text
  # The pixels are those of cat/0.png, ...: the same as reading the visible files directly.
  expected = np.asarray(Image.open(tmp_path / "cat" / "0.png"), np.float32) / 255
  np.testing.assert_array_equal(x[0], expected)
  # The split layout: hidden folders next to the splits and inside a split.
  split_root = tmp_path / "split"
  _write_images(str(split_root / "train"), ["a", "b", ".ipynb_checkpoints"], 2)
  _write_images(str(split_root / ".ipynb_checkpoints"), ["a"], 1)
  (split_root / "train" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
  assert folder.class_names(str(split_root)) == ["a", "b"]
  x, y = data.load("folder", "train", path=str(split_root))
  assert y.tolist() == [0, 0, 1, 1]


def test_only_hidden_entries_is_no_class(tmp_path):
  _write_images(str(tmp_path), [".ipynb_checkpoints"], 1)
  with pytest.raises(UserError, match="has no class folders"):
    data.load("folder", "train", path=str(tmp_path))
  _write_images(str(tmp_path), ["a"], 0)
  (tmp_path / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
  with pytest.raises(UserError, match="class folder .*a' has no images"):
    data.load("folder", "train", path=str(tmp_path))


@pytest.mark.parametrize("name,hidden", [
    (".ipynb_checkpoints", True), (".DS_Store", True), ("._cat.png", True), ("__MACOSX", True),
    ("__macosx", True), ("Thumbs.db", True), ("desktop.ini", True), ("@eaDir", True),
    ("$RECYCLE.BIN", True), ("System Volume Information", True), ("lost+found", True),
    ("~$notes.docx", True), ("Icon\r", True), ("cat", False), ("class_1", False),
    ("thumbs", False), ("a.png", False), ("_underscore", False)])
def test_is_hidden_or_system(name, hidden):
  from jax_abstain import files
  assert files.is_hidden_or_system(name) is hidden
  assert files.is_hidden_or_system(f"some/dir/{name}") is hidden


def test_packaged_config_names_skip_apple_double_files(tmp_path, monkeypatch):
  from jax_abstain import configs
  (tmp_path / "synth.py").write_text("def get_config(arg=None):\n  return {}\n")
  (tmp_path / "._synth.py").write_bytes(b"\x00\x05\x16\x07")
  monkeypatch.setattr(configs, "HERE", tmp_path)
  assert configs.names() == ["synth"]
