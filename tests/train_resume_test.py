"""A training process killed with SIGKILL at a random moment after its first checkpoint, then
started again, ends with exactly the parameters (and selected model) of an uninterrupted run."""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

_SCRIPT = """
import sys
import numpy as np
import ml_collections
from flax import nnx
from jax_abstain import data, models
from jax_abstain.training import loop

x, y = data.load("synthetic", "train")
cfg = ml_collections.ConfigDict(dict(
    loss="trades", beta=1.0, trades_beta=6.0, eps="0.1", norm="linf", variant="paper",
    epochs=3, batch_size=10, lr=0.03, momentum=0.9, weight_decay=1e-4, schedule="trades",
    attack_steps=3, attack_rel_step=0.25, bn_mode_attack="", bn_mode_loss="",
    checkpoint_every=7, keep_checkpoints=2, log_every=25, select_every=1, select_steps=5))
model = models.create("mlp", num_classes=3, seed=0)
out = loop.train(model, x[100:], y[100:], cfg, workdir=sys.argv[1], name="m", progress=False,
                 validation=(x[:100], y[:100]))
params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
flat = {"/".join(map(str, k)): np.asarray(v) for k, v in
        __import__("flax").traverse_util.flatten_dict(params).items()}
np.savez(sys.argv[2], best_step=out["best"]["step"], resumed_from=out["resumed_from"], **flat)
"""


def _start(script, workdir, out):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, str(script), str(workdir), str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _committed_steps(workdir):
  folder = workdir / "checkpoints" / "m"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
  script = tmp_path / "run.py"
  script.write_text(_SCRIPT)
  straight = _start(script, tmp_path / "a", tmp_path / "a.npz")
  killed = _start(script, tmp_path / "b", tmp_path / "b.npz")
  delay = random.Random().uniform(0.0, 1.0)
  deadline = time.time() + 300
  while not _committed_steps(tmp_path / "b") and killed.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  time.sleep(delay)
  killed.send_signal(signal.SIGKILL)
  assert killed.wait() == -signal.SIGKILL, "the run finished before it could be killed"
  at_kill = _committed_steps(tmp_path / "b")
  assert at_kill and at_kill[-1] < 270, at_kill        # 270 steps in all: killed mid-run
  resumed = _start(script, tmp_path / "b", tmp_path / "b.npz")
  _, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-3000:]
  _, err = straight.communicate(timeout=600)
  assert straight.returncode == 0, err[-3000:]
  a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
  assert int(a["resumed_from"]) == 0 and int(b["resumed_from"]) == at_kill[-1]
  assert sorted(a.files) == sorted(b.files)
  for key in set(a.files) - {"resumed_from"}:
    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} (killed {delay:.2f}s after "
                                  f"the first checkpoint, at checkpoints {at_kill})")
  lines = lambda w: [(r["kind"], r["step"]) for r in map(json.loads, (w / "metrics_m.jsonl").open())]
  assert lines(tmp_path / "b") == lines(tmp_path / "a")
