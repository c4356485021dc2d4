"""One per-sample report written by every process of a multi-host job: each process its own
range and its own partial file, process 0 merges by ``sample_idx`` once every row is in.

    mine = hosts.own_positions(n, index, count)         # this process's contiguous range
    done = hosts.rows_done(path)                         # sample_idx -> row, every partial file
    hosts.own_partial(path, index, count)                # where this process appends
    hosts.finish(path, header, sample_idx, index)        # merge (process 0) or wait for it

Files (docs/design.md, "Evaluation on many devices and hosts"): one process writes
``<report>.partial`` (as before); process k of n > 1 writes ``<report>.part<k>of<n>.partial``.
Every process reads the rows of every partial file of the report, whatever process count wrote
them, and computes only the samples of its range that no file holds yet, so a killed process
(or the whole job) resumes, and a restart with another process count completes the same
report. The handshake is the files themselves, on the filesystem the job already shares for
its workdir and checkpoints: process 0 polls until the partial files hold every sample, writes
the report atomically (rows sorted by ``sample_idx``, byte for byte the rows the processes
wrote) and deletes the partial files; the other processes poll until the report exists. No
collective or private JAX API is involved, so a slow process never times out a barrier and
processes may even run one after the other.
"""
import pathlib
import time

import numpy as np

from jax_abstain import files
from jax_abstain.errors import UserError

POLL_S = 0.5


def own_positions(n: int, index: int, count: int) -> np.ndarray:
  """Positions ``lo..hi-1`` of process `index` of `count` among n samples (contiguous ranges
  of sizes differing by at most one, `np.array_split`)."""
  return np.array_split(np.arange(n), count)[index]


def own_partial(path, index: int, count: int) -> pathlib.Path:
  """The final-report path whose ``.partial`` this process appends to (`reports.ReportWriter`)."""
  path = pathlib.Path(path)
  return path if count == 1 else path.with_name(f"{path.name}.part{index}of{count}")


def partial_files(path) -> list:
  """Every partial file of the report at `path`, of any process count."""
  path = pathlib.Path(path)
  single = path.with_name(path.name + ".partial")
  return ([single] if single.exists() else []) + sorted(
      path.parent.glob(f"{path.name}.part*of*.partial"))


def rows_done(path, header: str) -> dict:
  """sample_idx -> row text of every complete row in the partial files (a row being written,
  without its newline yet, is not complete); the first file's row wins a duplicate.

  Raises:
    UserError: a partial file with another header (other columns).
  """
  rows = {}
  width = header.count(",") + 1
  for part in partial_files(path):
    try:
      lines = part.read_text().split("\n")
    except FileNotFoundError:   # merged and deleted meanwhile
      continue
    if lines[0] != header:
      raise UserError(f"{part}: columns differ from this run's ({lines[0]!r}); delete it or "
                      "use the original settings")
    for line in lines[1:-1]:
      head = line.split(",", 1)[0]
      if line.count(",") + 1 == width and head.lstrip("-").isdigit():
        rows.setdefault(int(head), line)
  return rows


def finish(path, header: str, sample_idx, index: int, *, timeout_s: float = 24 * 3600) -> None:
  """Process 0: waits until the partial files hold every sample of `sample_idx`, writes the
  report (rows sorted by sample_idx) and deletes the partial files. Other processes: wait until
  the report exists.

  Raises:
    UserError: `timeout_s` passed first (a process died and was not restarted).
  """
  path = pathlib.Path(path)
  wanted = {int(i) for i in sample_idx}
  deadline = time.monotonic() + timeout_s
  while not path.exists():
    if index == 0:
      rows = rows_done(path, header)
      if wanted <= rows.keys():
        body = "".join(rows[i] + "\n" for i in sorted(wanted))
        files.atomic_write(path, header + "\n" + body)
        for part in partial_files(path):
          part.unlink(missing_ok=True)
        return
      missing = len(wanted - rows.keys())
    else:
      missing = "some"
    if time.monotonic() > deadline:
      raise UserError(f"{path}: {missing} samples still missing after {timeout_s:.0f} s; "
                      "restart the processes that stopped (they resume their ranges)")
    time.sleep(POLL_S)
