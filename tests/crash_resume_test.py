"""SIGKILL at random points, restart, and compare with an uninterrupted run byte for byte.

Evaluation (``python -m jax_abstain.main`` in mode ``evaluate`` on a small saved MLP) and
certification (``python -m jax_abstain.cli.certify``) append per-sample rows to
``<report>.partial``; each test kills its job (SIGKILL: no cleanup, no flush beyond what was
already written) once the partial report holds a seeded-random number of rows, kills the
restarted job again, and then lets a third start finish. The final report and summary must be
identical to those of an uninterrupted run. Training's kill test belongs to checkpointing
(issue 7).
"""
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from tiny_digits_model import train_and_save

RNG = random.Random(9)
ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return train_and_save(tmp_path_factory.mktemp("crash") / "model", steps=40)


def _rows(path) -> int:
  try:
    return max(0, path.read_text().count("\n") - 1)
  except FileNotFoundError:
    return 0


def _run_killed(cmd, cwd, partial, final, at_rows, timeout=300):
  """Starts cmd, SIGKILLs it once `partial` holds >= at_rows rows; returns the rows seen then.

  Fails the test if the job finished before it could be killed (the kill point must lie
  inside the job for the test to mean anything).
  """
  # The job runs at the lowest priority so that, on a busy machine, this polling loop still
  # wakes up between two of its row flushes.
  # (`nice` as a program, not a preexec_fn: forking a multithreaded JAX process is unsafe.)
  proc = subprocess.Popen(["nice", "-n", "19", *cmd], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  start = time.time()
  try:
    while _rows(partial) < at_rows:
      assert proc.poll() is None, f"job ended before the kill: {proc.stderr.read().decode()[-2000:]}"
      assert time.time() - start < timeout
      time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert not final.exists(), "the job finished before the kill landed"
  return _rows(partial)


def _run(cmd, cwd):
  proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_twice_then_finish(cmd, tmp_path, rel_partial, rel_final, rel_outputs, total_rows):
  ref, run = tmp_path / "uninterrupted", tmp_path / "killed"
  ref.mkdir()
  run.mkdir()
  _run(cmd, ref)
  # Two kill points, seeded, increasing, well inside the job.
  first = RNG.randint(1, total_rows // 3)
  second = RNG.randint(first + 1, 2 * total_rows // 3)
  seen = [_run_killed(cmd, run, run / rel_partial, run / rel_final, at) for at in (first, second)]
  assert seen[0] < total_rows and seen[1] < total_rows
  _run(cmd, run)
  assert not (run / rel_partial).exists()
  for rel in rel_outputs:
    assert (run / rel).read_bytes() == (ref / rel).read_bytes(), rel
  return seen


@pytest.mark.slow
def test_evaluation_killed_twice_resumes_to_identical_report(model_dir, tmp_path):
  """60 digits in chunks of 3 at eps 0.1 and 0.2 (APGD-CE, 10 steps)."""
  cmd = [sys.executable, "-m", "jax_abstain.main",
         f"--config=evaluate:model={model_dir},data=digits,eps=0.1,limit=60,"
         "n_iter=10", "--config.eval.batch_size=3", "--workdir=wd"]
  seen = _kill_twice_then_finish(cmd, tmp_path, "wd/reports/model.csv.partial",
                                 "wd/reports/model.csv",
                                 ["wd/reports/model.csv", "wd/results.json"], 60)
  assert seen[0] % 3 == 0 and seen[1] % 3 == 0   # whole chunks only: no torn rows survive
  text = (tmp_path / "killed" / "wd" / "reports" / "model.csv").read_text().splitlines()
  assert text[0] == "sample_idx,label,pred,is_acc,conf,is_rob@0.1,is_rob@0.2" and len(text) == 61


@pytest.mark.slow
def test_certification_killed_twice_resumes_to_identical_report(model_dir, tmp_path):
  """30 digits, CERTIFY with n0 = 20, n = 2,000, sigma 0.25; the summary JSON as well."""
  cmd = [sys.executable, "-m", "jax_abstain.cli.certify", "--model", str(model_dir),
         "--data", "digits", "--limit", "30", "--sigma", "0.25", "--n0", "20", "--n", "2000",
         "--batch-size", "500", "--out", "cert/r.csv", "--eps", "0.1", "0.25",
         "--json", "cert/summary.json"]
  _kill_twice_then_finish(cmd, tmp_path, "cert/r.csv.partial", "cert/r.csv",
                          ["cert/r.csv", "cert/summary.json", "cert/r.csv.settings.json"], 30)
  text = (tmp_path / "killed" / "cert" / "r.csv").read_text().splitlines()
  assert text[0] == "sample_idx,label,pred,is_acc,conf,cert_pred,radius" and len(text) == 31
