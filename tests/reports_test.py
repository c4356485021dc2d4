"""Per-sample report writing: atomic finish, torn-line recovery on resume, JSON."""
import numpy as np
import pytest

from jax_abstain import reports
from jax_abstain.errors import UserError

COLS = ["sample_idx", "label", "pred", "is_acc", "conf", "is_rob@0.1"]


def _row(i):
  return {"sample_idx": i, "label": i % 3, "pred": i % 3, "is_acc": True, "conf": 0.5, "is_rob@0.1": i % 2}


def test_writer_resumes_after_torn_line(tmp_path):
  path = tmp_path / "r.csv"
  with pytest.raises(RuntimeError):
    with reports.ReportWriter(path, COLS, 6) as w:
      for i in range(3):
        w.write(_row(i))
      raise RuntimeError("killed")
  assert not path.exists() and path.with_name("r.csv.partial").exists()
  with path.with_name("r.csv.partial").open("a") as f:
    f.write("\x00\x00,,,,,\n")              # a block of zeros a crash left (same field count)
    f.write("3,0,0,1")                      # a torn write without newline
  with reports.ReportWriter(path, COLS, 6) as w:
    assert w.todo(range(6)) == [3, 4, 5]
    for i in w.todo(range(6)):
      w.write(_row(i))
  cols = reports.read_report(path)
  np.testing.assert_array_equal(cols["sample_idx"], np.arange(6))
  np.testing.assert_array_equal(cols["is_rob@0.1"], np.arange(6) % 2)
  assert not path.with_name("r.csv.partial").exists()


def test_writer_refuses_other_columns(tmp_path):
  path = tmp_path / "r.csv"
  with pytest.raises(RuntimeError):
    with reports.ReportWriter(path, COLS, 2) as w:
      w.write(_row(0))
      raise RuntimeError
  with pytest.raises(UserError, match="columns differ"):
    with reports.ReportWriter(path, COLS[:-1], 2):
      pass


def test_read_report_errors(tmp_path):
  with pytest.raises(UserError, match="no such report"):
    reports.read_report(tmp_path / "missing.csv")
  bad = tmp_path / "bad.csv"
  bad.write_text("a,b\n1,2\n")
  with pytest.raises(UserError, match="not a per-sample report"):
    reports.read_report(bad)
