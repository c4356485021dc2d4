"""The atomic writer: the user's umask, old file kept on interruption, no temporaries left."""
import json
import os
import pathlib
import stat
import subprocess
import sys

import numpy as np
import pytest

from jax_abstain import files
from jax_abstain.errors import UserError

# Runs in a fresh interpreter so the umask change cannot leak into other tests.
UMASK_SCRIPT = """
import os, stat, sys, pathlib
from jax_abstain import files
os.umask(int(sys.argv[2], 8))
root = pathlib.Path(sys.argv[1])
files.atomic_write(root / "sub" / "a.txt", "text")
files.write_json(root / "b.json", {"x": 1})
with files.atomic_directory(root / "model") as tmp:
  (tmp / "w.bin").write_bytes(b"w")
modes = {p: stat.S_IMODE(os.stat(root / p).st_mode)
         for p in ("sub", "sub/a.txt", "b.json", "model", "model/w.bin")}
print(" ".join(f"{p}={m:o}" for p, m in modes.items()))
"""


@pytest.mark.parametrize("umask, file_mode, dir_mode", [("022", 0o644, 0o755),
                                                         ("027", 0o640, 0o750)])
def test_modes_follow_umask(tmp_path, umask, file_mode, dir_mode):
  out = subprocess.run([sys.executable, "-c", UMASK_SCRIPT, str(tmp_path), umask],
                       capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}).stdout.split()
  modes = dict(kv.split("=") for kv in out)
  assert modes == {"sub": f"{dir_mode:o}", "sub/a.txt": f"{file_mode:o}",
                   "b.json": f"{file_mode:o}", "model": f"{dir_mode:o}",
                   "model/w.bin": f"{file_mode:o}"}


def test_replacing_takes_umask_mode_not_old_mode(tmp_path):
  path = tmp_path / "a.txt"
  path.write_text("old")
  os.chmod(path, 0o600)
  old = os.umask(0o022)
  try:
    files.atomic_write(path, b"new")
  finally:
    os.umask(old)
  assert path.read_bytes() == b"new"
  assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _tmp_files(folder):
  return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_interrupted_write_keeps_old_file(tmp_path):
  path = tmp_path / "results.json"
  files.write_json(path, {"old": 1})

  def torn(f):
    f.write(b'{"new": ')
    raise KeyboardInterrupt  # Ctrl-C half way through the write

  with pytest.raises(KeyboardInterrupt):
    files.atomic_write(path, torn)
  assert json.loads(path.read_text()) == {"old": 1}
  assert _tmp_files(tmp_path) == []


def test_interrupted_directory_keeps_old_directory(tmp_path):
  path = tmp_path / "model"
  path.mkdir()
  (path / "manifest.json").write_text("{}")
  with pytest.raises(RuntimeError):
    with files.atomic_directory(path, overwrite=True) as tmp:
      (tmp / "weights").write_bytes(b"half")
      raise RuntimeError("killed")
  assert sorted(p.name for p in path.iterdir()) == ["manifest.json"]
  assert _tmp_files(tmp_path) == []
  with files.atomic_directory(path, overwrite=True) as tmp:
    (tmp / "weights").write_bytes(b"full")
  assert sorted(p.name for p in path.iterdir()) == ["weights"]
  assert _tmp_files(tmp_path) == []


def test_directory_refuses_non_empty_without_overwrite(tmp_path):
  (tmp_path / "m").mkdir()
  (tmp_path / "m" / "x").write_text("x")
  with pytest.raises(UserError, match="is not empty"):
    with files.atomic_directory(tmp_path / "m"):
      pass
  assert (tmp_path / "m" / "x").read_text() == "x"


def test_writer_callable_and_bytes(tmp_path):
  files.atomic_write(tmp_path / "a.npz", lambda f: np.savez(f, x=np.arange(4)))
  with np.load(tmp_path / "a.npz") as d:
    np.testing.assert_array_equal(d["x"], np.arange(4))
  files.atomic_write(tmp_path / "b.bin", b"\x00\x01")
  assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
  with pytest.raises(TypeError, match="expected str, bytes or a writer"):
    files.atomic_write(tmp_path / "c", 3)
  assert _tmp_files(tmp_path) == []


def test_json_roundtrip_numpy(tmp_path):
  files.write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": np.arange(3),
                                         "c": np.bool_(True), "d": np.int64(7)})
  assert (tmp_path / "x.json").read_text() == (
      '{\n  "a": 1.5,\n  "b": [\n    0,\n    1,\n    2\n  ],\n  "c": true,\n  "d": 7\n}\n')
  assert files.read_json(tmp_path / "x.json") == {"a": 1.5, "b": [0, 1, 2], "c": True, "d": 7}
  (tmp_path / "bad.json").write_text("{")
  with pytest.raises(UserError, match="bad.json: not valid JSON"):
    files.read_json(tmp_path / "bad.json")
  with pytest.raises(UserError, match="no such file"):
    files.read_json(tmp_path / "missing.json")


def test_check_file_and_output(tmp_path):
  report = tmp_path / "r.csv"
  report.write_text("sample_idx,label\n0,1\n")
  assert files.check_file(report, "report", "--models") == report
  (tmp_path / "x.csv.partial").write_text("sample_idx\n")
  with pytest.raises(UserError, match=r"--models: no such report file: .*x.csv \(an unfinished "
                                      r"x.csv.partial exists: resume the job\)"):
    files.check_file(tmp_path / "x.csv", "report", "--models")
  with pytest.raises(UserError, match="--model: .* is not a model directory"):
    files.check_file(tmp_path, "model", "--model")
  with pytest.raises(UserError, match="kind: expected one of"):
    files.check_file(report, "picture")
  with pytest.raises(UserError, match="--json: .*r.csv exists; choose another name"):
    files.check_output(report, "--json")
  assert files.check_output(report, "--json", overwrite=True) == report
  with pytest.raises(UserError, match="is a file, so .* cannot be created"):
    files.check_output(report / "out.json", "--json")
  with pytest.raises(UserError, match="is a folder; expected a file name"):
    files.check_output(tmp_path, "--json")
