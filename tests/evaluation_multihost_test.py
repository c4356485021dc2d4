"""The evaluate job as two JAX processes joined by `jax.distributed` on 127.0.0.1 (the
multihost launcher's local mode): each evaluates its own range, process 0 merges, and the
report is byte-identical to the one-process report; a process killed with SIGKILL mid-range
(then the whole job) is resumed by a restart with another process count to the same report.
Slow: every process starts JAX and compiles the attack."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
LIMIT = 120


def _config(model_dir):
  # 120 digits in chunks of 2: 30 chunks per process, so a kill after the first chunk lands
  # mid-range even when the attack is already compiled (persistent cache) and fast.
  return (f"--config=evaluate:model={model_dir},data=digits,eps=0.1,limit={LIMIT},n_iter=5,"
          f"batch_size=2,conf=true,name=e")


def _main(args, **kw):
  return subprocess.Popen([sys.executable, "-m", "jax_abstain.main", *args], env=ENV, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_and_a_killed_process_give_the_one_process_report(tmp_path):
  sys.path.insert(0, str(ROOT / "tests"))
  import tiny_digits_model  # pylint: disable=import-outside-toplevel
  model_dir = tiny_digits_model.train_and_save(tmp_path / "model", steps=40)
  config = _config(model_dir)
  one = _main([config, f"--workdir={tmp_path / 'one'}"])
  assert one.wait(timeout=900) == 0, one.stderr.read()[-3000:]
  reference = (tmp_path / "one" / "reports" / "e.csv").read_bytes()
  assert len(reference.decode().splitlines()) == 1 + LIMIT

  two = subprocess.run([sys.executable, "-m", "jax_abstain.cli.multihost", "--local=2", "--",
                        config, f"--workdir={tmp_path / 'two'}"], env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
  assert two.returncode == 0, two.stderr[-3000:]
  assert (tmp_path / "two" / "reports" / "e.csv").read_bytes() == reference
  assert "[0] e: natural accuracy" in two.stdout

  # Two processes again; process 1 is killed once it has written a chunk, then process 0.
  port, wd = _free_port(), tmp_path / "killed"
  procs = [_main([config, f"--workdir={wd}", f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", f"--process_id={k}"]) for k in range(2)]
  part = wd / "reports" / "e.csv.part1of2.partial"
  deadline = time.time() + 900
  while time.time() < deadline and not (part.exists() and
                                         len(part.read_text().splitlines()) >= 1 + 2):
    assert procs[1].poll() is None, procs[1].stderr.read()[-3000:]
    time.sleep(0.01)
  procs[1].send_signal(signal.SIGKILL)
  procs[0].send_signal(signal.SIGKILL)
  for p in procs:
    p.communicate(timeout=60)
  rows = len(part.read_text().splitlines()) - 1
  assert 2 <= rows < LIMIT // 2 and not (wd / "reports" / "e.csv").exists()
  # Restarted as one process: it computes only the missing samples.
  again = _main([config, f"--workdir={wd}"])
  assert again.wait(timeout=900) == 0, again.stderr.read()[-3000:]
  assert (wd / "reports" / "e.csv").read_bytes() == reference
  assert not list((wd / "reports").glob("*.partial"))
