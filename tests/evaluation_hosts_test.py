"""Reports of a multi-host job (`evaluation.hosts`, `runner.run_into_report` with
``process=(index, count)``): processes run as threads of this test, each on its own range into
its own partial file; process 0 merges. The merged report must be byte-identical to a
one-process report, also after a process was killed mid-range and the job restarted with
another process count, and each sample must be computed once."""
import threading

import numpy as np
import pytest

from jax_abstain import reports
from jax_abstain.errors import UserError
from jax_abstain.evaluation import hosts, runner

COLUMNS = ["sample_idx", "label", "pred", "is_acc", "conf"]
N = 23
IDX = np.arange(100, 100 + N)[::-1]   # sample indices need not be positions, nor sorted
CHUNKS = [np.arange(lo, min(lo + 4, N)) for lo in range(0, N, 4)]


class Chunks:
  """run_chunk: values from the sample index only; counts the samples computed; raises
  KeyboardInterrupt (a kill) at call number `kill_at`."""

  def __init__(self, kill_at=None):
    self.kill_at, self.calls, self.samples = kill_at, 0, []
    self.lock = threading.Lock()

  def __call__(self, pos):
    with self.lock:
      self.calls += 1
      if self.calls == self.kill_at:
        raise KeyboardInterrupt
      self.samples += IDX[pos].tolist()
    i = IDX[pos]
    return {"sample_idx": i, "label": i % 3, "pred": i % 4, "is_acc": i % 3 == i % 4,
            "conf": i / 977.0}


def _run(path, process, chunks=None, settings=None):
  return runner.run_into_report(path, settings or {"a": 1}, COLUMNS, IDX, CHUNKS,
                                chunks or Chunks(), progress=False, process=process)


def _job(path, count, chunks):
  """`count` processes as threads; returns what each returned."""
  out = [None] * count
  threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, _run(path, (k, count),
                                                                         chunks)))
             for k in range(count)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  return out


@pytest.fixture(name="reference")
def _reference(tmp_path):
  path = tmp_path / "one" / "r.csv"
  _run(path, (0, 1))
  return path.read_bytes()


def test_ranges_split_the_samples():
  ranges = [hosts.own_positions(10, k, 3).tolist() for k in range(3)]
  assert ranges == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_two_processes_write_the_one_process_report(tmp_path, reference):
  path, chunks = tmp_path / "r.csv", Chunks()
  out = _job(path, 2, chunks)
  assert path.read_bytes() == reference
  assert sorted(chunks.samples) == sorted(IDX.tolist())          # each sample once
  assert not list(tmp_path.glob("r.csv.part*")) and not (tmp_path / "r.csv.partial").exists()
  for cols in out:   # every process returns the merged report
    np.testing.assert_array_equal(cols["sample_idx"], np.sort(IDX))
  text = reference.decode().splitlines()
  assert text[0] == ",".join(COLUMNS) and text[1].startswith("100,1,0,0,0.102354")


def test_killed_process_resumes_and_other_count_completes(tmp_path, reference):
  path = tmp_path / "r.csv"
  # Process 1 of 3 (positions 8..15, chunks 8..11 and 12..15) is killed in its second chunk.
  with pytest.raises(KeyboardInterrupt):
    _run(path, (1, 3), Chunks(kill_at=2))
  part = tmp_path / "r.csv.part1of3.partial"
  assert len(part.read_text().splitlines()) == 1 + 4
  with part.open("a") as f:
    f.write("92,2,0,0,0.1")   # a row torn by the kill, without its newline
  # The job restarts with 2 processes: the 4 finished samples are not computed again.
  chunks = Chunks()
  _job(path, 2, chunks)
  assert path.read_bytes() == reference
  assert len(chunks.samples) == N - 4 and len(set(chunks.samples)) == N - 4
  assert not part.exists()


def test_finished_report_is_read_and_other_settings_refused(tmp_path, reference):
  path = tmp_path / "r.csv"
  with pytest.raises(KeyboardInterrupt):
    _run(path, (1, 2), Chunks(kill_at=2))
  with pytest.raises(UserError, match=r"different settings \(a\)"):
    _run(path, (0, 1), settings={"a": 2})
  _run(path, (0, 1))
  chunks = Chunks()
  _run(path, (1, 2), chunks)   # finished: read back, nothing computed
  assert chunks.calls == 0 and path.read_bytes() == reference
  assert reports.read_report(path)["sample_idx"].tolist() == sorted(IDX.tolist())


def test_other_columns_refused(tmp_path):
  (tmp_path / "r.csv.part0of2.partial").write_text("sample_idx,x\n1,2\n")
  with pytest.raises(UserError, match="columns differ"):
    hosts.rows_done(tmp_path / "r.csv", ",".join(COLUMNS))


def test_no_private_jax_import():
  """The multi-host handshakes use public APIs only (no ``jax._src`` import)."""
  import ast, pathlib  # pylint: disable=import-outside-toplevel,multiple-imports
  root = pathlib.Path(hosts.__file__).resolve().parents[1]
  for path in root.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      assert not any(n.startswith("jax._src") for n in names), path
