"""SIGTERM (a scheduler's notice before preemption): training saves a checkpoint at the next
step (one off its checkpoint schedule) and stops with `preemption.Preempted`; the run started
again ends with exactly the parameters of an uninterrupted run. Evaluation stops after the
chunk it flushed, and the command lines turn the stop into one line and exit status 143."""
import os
import signal

import jax
import numpy as np
import pytest
from flax import nnx

from jax_abstain import data, models, preemption
from jax_abstain.cli import common as cli
from jax_abstain.evaluation import runner
from jax_abstain.training import TrainConfig, loop

CFG = TrainConfig.from_config(dict(
    loss="trades", eps="0.1", epochs=2, batch_size=10, lr=0.03, schedule="trades",
    attack_steps=2, checkpoint_every=7, keep_checkpoints=3, log_every=5, select_every=0))


def _fit(workdir, sigterm_at=None, monkeypatch=None):
  x, y = data.load("synthetic", "train")
  if sigterm_at is not None:   # a real SIGTERM to this process, delivered inside step 5
    after = loop._Run._after_step   # pylint: disable=protected-access

    def after_step(self, done):
      if done == sigterm_at:
        os.kill(os.getpid(), signal.SIGTERM)
      return after(self, done)
    monkeypatch.setattr(loop._Run, "_after_step", after_step)  # pylint: disable=protected-access
  model = models.create("mlp", num_classes=3, seed=0)
  out = loop.train(model, x[:100], y[:100], CFG, workdir=workdir, name="m", progress=False)
  return out, jax.tree.leaves(nnx.state(model, nnx.Param))


@pytest.mark.slow   # three short training runs: about 30 s on an idle 2-core machine
def test_sigterm_saves_the_next_step_and_resume_matches(tmp_path, monkeypatch):
  _, straight = _fit(tmp_path / "a")
  with pytest.raises(preemption.Preempted, match="after step 5 of 20"):
    _fit(tmp_path / "b", sigterm_at=5, monkeypatch=monkeypatch)
  steps = sorted(int(p.name) for p in (tmp_path / "b" / "checkpoints" / "m").iterdir()
                 if p.name.isdigit())
  assert steps == [5]     # step 5 is off the schedule (every 7): saved for the preemption
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # the handler is gone again
  monkeypatch.undo()
  out, resumed = _fit(tmp_path / "b")
  assert out["resumed_from"] == 5
  for a, b in zip(straight, resumed):
    np.testing.assert_array_equal(a, b)


def test_sigterm_stops_evaluation_after_a_flushed_chunk(tmp_path):
  idx = np.arange(6)

  def chunk(pos):
    if pos[0] == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return {"sample_idx": idx[pos], "pred": pos % 2}

  with pytest.raises(preemption.Preempted, match="4 samples"):
    runner.run_into_report(tmp_path / "r.csv", {}, ["sample_idx", "pred"], idx,
                           [idx[:2], idx[2:4], idx[4:]], chunk, progress=False)
  assert (tmp_path / "r.csv.partial").read_text() == "sample_idx,pred\n0,0\n1,1\n2,0\n3,1\n"


def test_command_line_exit_status():
  def stopped(_):
    raise preemption.Preempted("m: stopped")
  with pytest.raises(SystemExit) as exit_info:
    cli.run_with_clean_errors(stopped, [])
  assert exit_info.value.code == 143 == preemption.EXIT_STATUS
