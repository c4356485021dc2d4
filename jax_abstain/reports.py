"""Per-sample reports (CSV), written atomically or appended row by row.

    with reports.ReportWriter(path, columns) as w:       # resumable: skips finished samples
      for idx in w.todo(range(n)): ...; w.write(row)
    cols = reports.read_report(path)                      # name -> np.ndarray

A report under construction lives at ``<path>.partial``; rows are flushed as they are
written, a torn last line (a crash mid-write) is dropped on resume, and the file is renamed to
``<path>`` only when every sample is in. A finished report is therefore always complete.
Whole files are written with `jax_abstain.files.atomic_write` (docs/design.md, "Contracts").
"""
import csv
import io
import os
import pathlib

import numpy as np

from jax_abstain import files
from jax_abstain.errors import UserError

BASE_COLUMNS = ("sample_idx", "label", "pred", "is_acc", "conf")


def _format(value) -> str:
  if isinstance(value, (bool, np.bool_)):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    return f"{float(value):.6g}"
  return str(int(value)) if isinstance(value, np.integer) else str(value)


def write_report(path, columns: dict) -> None:
  """Writes a whole report at once (atomically). columns: name -> [N] array, in column order."""
  names = list(columns)
  n = len(next(iter(columns.values()))) if columns else 0
  buf = io.StringIO()
  buf.write(",".join(names) + "\n")
  for i in range(n):
    buf.write(",".join(_format(columns[c][i]) for c in names) + "\n")
  files.atomic_write(path, buf.getvalue())


def _is_int(text: str) -> bool:
  try:
    int(text)
    return True
  except ValueError:
    return False


def _parse_column(name, values):
  if name in ("sample_idx", "label", "pred", "cert_pred") or name.startswith(("is_acc", "is_rob", "is_cert")):
    return np.asarray([int(v) for v in values], np.int64)
  return np.asarray([float(v) for v in values], np.float64)


def read_report(path) -> dict:
  """Reads a per-sample report into name -> np.ndarray (ints for indices/indicators)."""
  path = pathlib.Path(path)
  if not path.is_file():
    partial = path.with_name(path.name + ".partial")
    hint = (f" (an unfinished {partial.name} exists: resume the evaluation)"
            if partial.exists() else "")
    raise UserError(f"no such report: {path}{hint}")
  with path.open(newline="") as f:
    rows = list(csv.reader(f))
  if not rows or rows[0][:1] != ["sample_idx"]:
    raise UserError(f"{path}: not a per-sample report (first column must be sample_idx)")
  header, body = rows[0], rows[1:]
  if any(len(r) != len(header) for r in body):
    raise UserError(f"{path}: rows have a different number of fields than the header")
  try:
    return {name: _parse_column(name, [r[j] for r in body]) for j, name in enumerate(header)}
  except ValueError as e:
    raise UserError(f"{path}: malformed value ({e})") from None


def settings_path(path) -> pathlib.Path:
  """``<report>.settings.json``: the settings a (resumable) report was started with."""
  path = pathlib.Path(path)
  return path.with_name(path.name + ".settings.json")


def check_settings(path, settings: dict, *, started: bool = False) -> None:
  """Records the settings of the report at `path`, or refuses a resume with other settings.

  A report that is unfinished (``<path>.partial``) or finished may only be continued or re-read
  with the settings it was started with; the message names the differing keys. Settings that
  cannot change the results (batch size, progress bars) do not belong in `settings`.

  ``started``: the report is under way in files this function does not know (the partial
  files of other processes, `evaluation.hosts`).

  Raises:
    UserError: the stored settings differ, or a report exists without its settings file.
  """
  path = pathlib.Path(path)
  sp, partial = settings_path(path), path.with_name(path.name + ".partial")
  started = started or partial.exists() or path.exists()
  if sp.exists() and started:
    old = files.read_json(sp)
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
      raise UserError(f"{path}: was started with different settings ({', '.join(diff)}); "
                      "delete the report or use the original settings")
  elif started:
    raise UserError(f"{path}: exists without {sp.name}; delete it to start a new evaluation")
  else:
    files.write_json(sp, settings)


class ReportWriter:
  """Appends per-sample rows to ``<path>.partial`` and renames it to `path` when complete.

  Args:
    path: final CSV path.
    columns: column names (first must be ``sample_idx``).
    num_samples: rows expected; `close` renames only when all are present.
  """

  def __init__(self, path, columns, num_samples: int):
    self.path = pathlib.Path(path)
    self.partial = self.path.with_name(self.path.name + ".partial")
    self.columns = list(columns)
    self.num_samples = int(num_samples)
    self.done: set[int] = set()
    self._file = None

  def __enter__(self):
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if self.partial.exists():
      self._recover()
    else:
      with self.partial.open("w") as f:
        f.write(",".join(self.columns) + "\n")
    self._file = self.partial.open("a")
    return self

  def _recover(self):
    text = self.partial.read_text()
    lines = text.split("\n")
    if lines[0].split(",") != self.columns:
      raise UserError(f"{self.partial}: columns differ from this run's ({lines[0]!r}); "
                      "delete it or use the original config")
    # Every complete row ends with a newline, so the last element of the split is either empty
    # or a torn write from a crash; drop it.
    good = [l for l in lines[1:-1]
            if l and len(l.split(",")) == len(self.columns) and _is_int(l.split(",", 1)[0])]
    files.atomic_write(self.partial, "\n".join([lines[0], *good]) + "\n")
    self.done = {int(l.split(",", 1)[0]) for l in good}

  def todo(self, indices):
    """The sample indices not yet in the report, in order."""
    return [int(i) for i in indices if int(i) not in self.done]

  def write(self, row: dict) -> None:
    self._file.write(",".join(_format(row[c]) for c in self.columns) + "\n")
    self.done.add(int(row["sample_idx"]))

  def flush(self) -> None:
    self._file.flush()
    os.fsync(self._file.fileno())

  def __exit__(self, exc_type, *_):
    self.flush()
    self._file.close()
    if exc_type is None and len(self.done) >= self.num_samples:
      self._finalize()
    return False

  def _finalize(self):
    with self.partial.open(newline="") as f:
      rows = list(csv.reader(f))
    header, body = rows[0], sorted(rows[1:], key=lambda r: int(r[0]))
    buf = io.StringIO()
    buf.write(",".join(header) + "\n")
    for r in body:
      buf.write(",".join(r) + "\n")
    files.atomic_write(self.path, buf.getvalue())
    self.partial.unlink()
