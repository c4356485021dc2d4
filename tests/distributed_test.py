"""Data parallelism: one step on two devices equals the one-device step, and two processes
joined by `jax.distributed` (CPU collectives over localhost) train a step together, agree on
the parameters, and match the single-process step on the same global batch."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx, traverse_util

from jax_abstain import data, models
from jax_abstain.data import pipeline
from jax_abstain.training import TrainConfig, loop, step as step_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cfg(**kw):
  base = dict(loss="era", beta=1.0, trades_beta=6.0, eps="0.1", norm="linf", variant="paper",
              epochs=1, batch_size=8, lr=0.05, momentum=0.9, weight_decay=1e-4,
              schedule="constant", attack_steps=2, attack_rel_step=0.25, bn_mode_attack="",
              bn_mode_loss="")
  return TrainConfig.from_config({**base, **kw})


def _run(code, *args, env=None, **popen):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **(env or {}))
  return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


_TWO_DEVICES = """
import sys
import jax, numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from jax_abstain import models
from jax_abstain.training import step
sys.path.insert(0, sys.argv[1])
from distributed_test import _cfg

assert jax.device_count() == 2, jax.devices()
rng = np.random.default_rng(0)


class ConvBN(nnx.Module):
  # Batch norm in train mode: its batch statistics must be those of the global batch.
  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.head = nnx.Linear(4, 10, rngs=rngs)

  def __call__(self, x):
    return self.head(jax.nn.relu(self.bn(self.conv(x))).mean((1, 2)))


cases = [("era", lambda: models.create("mlp", num_classes=10, seed=0, in_features=48,
                                        hidden=(16,)), {}),
         ("trades", lambda: ConvBN(nnx.Rngs(0)), dict(bn_mode_attack="eval"))]
for loss, make, extra in cases:
  x = rng.uniform(size=(8, 4, 4, 3)).astype(np.float32)
  y = rng.integers(0, 10, 8).astype(np.int32)
  cfg = _cfg(loss=loss, eps="8/255", **extra)
  out = []
  for devices in (jax.devices()[:1], jax.devices()):
    model = make()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    init = jax.tree.map(np.array, nnx.to_pure_dict(params))   # a copy: the step donates its inputs
    mesh = step.data_mesh(devices)
    tx = step.make_optimizer(cfg, 1)
    put = lambda t, spec: jax.device_put(t, NamedSharding(mesh, spec))
    p, r = put(nnx.to_pure_dict(params), P()), put(nnx.to_pure_dict(rest), P())
    o = put(tx.init(nnx.to_pure_dict(params)), P())
    xb, yb = put(x, P("data")), put(y, P("data"))
    assert len(xb.sharding.device_set) == len(devices)
    p, r, o, m = step.make_train_step(graphdef, cfg, tx)(p, r, o, xb, yb, jax.random.key(1))
    out.append(jax.device_get((p, r, m)))
  one, two = out
  if loss == "trades":   # the running statistics moved, identically
    assert not np.allclose(one[1]["bn"]["mean"], 0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6), one, two)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(init),
                                                         jax.tree.leaves(one[0])))
  assert moved > 1e-4, (loss, moved)
  print(loss, "ok", moved)
"""


@pytest.mark.slow
def test_two_device_step_equals_one_device_step():
  proc = _run(_TWO_DEVICES, ROOT / "tests",
              env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert out.count(" ok ") == 2, out


_PROCESS = """
import sys
import numpy as np
from flax import nnx, traverse_util
from jax_abstain.training import distributed
distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2, process_id=int(sys.argv[1]))
import jax
from jax_abstain import data, models
from jax_abstain.training import loop
sys.path.insert(0, sys.argv[4])
from distributed_test import _cfg

assert jax.process_count() == 2 and jax.device_count() == 2
x, y = data.load("synthetic", "train")
model = models.create("mlp", num_classes=3, seed=0)
out = loop.train(model, x[:8], y[:8], _cfg(), workdir=sys.argv[3], name="m", progress=False)
flat = {"/".join(map(str, k)): np.asarray(v) for k, v in
        traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param))).items()}
np.savez(f"{sys.argv[3]}/params_{jax.process_index()}.npz", **flat)
print("steps", out["steps"])
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_a_step_together(tmp_path):
  port = _free_port()
  procs = [_run(_PROCESS, i, port, tmp_path, ROOT / "tests") for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    assert "steps 1" in out
  a, b = (np.load(tmp_path / f"params_{i}.npz") for i in range(2))
  for key in a.files:
    np.testing.assert_array_equal(a[key], b[key])
  # The same step in this single process, on the global batch the two hosts assembled:
  # host k's first batch from its shard, rows in process order.
  x, y = data.load("synthetic", "train")
  x, y = x[:8], y[:8]
  rows = np.concatenate([next(iter(pipeline.train_loader(x, y, batch_size=4, seed=0,
                                                         shard=(k, 2))))["index"]
                         for k in range(2)])
  assert sorted(rows) == list(range(8))
  cfg = _cfg()
  model = models.create("mlp", num_classes=3, seed=0)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = step_lib.make_optimizer(cfg, 1)
  keys = loop.example_keys(jax.random.key_data(jax.random.key(0)), 0, rows)
  p, _, _, _ = step_lib.make_train_step(graphdef, cfg, tx)(
      nnx.to_pure_dict(params), nnx.to_pure_dict(rest), tx.init(nnx.to_pure_dict(params)), x[rows],
      y[rows], keys)
  expected = {"/".join(map(str, k)): v
              for k, v in traverse_util.flatten_dict(jax.device_get(p)).items()}
  assert sorted(expected) == sorted(a.files)
  for key in a.files:
    np.testing.assert_allclose(a[key], expected[key], rtol=1e-5, atol=1e-6)
  assert (tmp_path / "checkpoints" / "m" / "1").is_dir()
  assert (tmp_path / "checkpoints" / "m" / "1" / "data" / "process_1-of-2.json").is_file()


_TINY_CONFIG = '''
import ml_collections

def get_config(arg=None):
  return ml_collections.ConfigDict(dict(
      mode="train", name="std", seed=0,
      data=dict(name="digits", path="", split="test", eval_limit=10, train_limit=0, augment="none"),
      model=dict(name="mlp", num_classes=10, options=dict(in_features=64, hidden=(32,)), init_dir=""),
      train=dict(loss="std", beta=1.0, trades_beta=6.0, eps="0.1", norm="linf", variant="paper",
                 epochs=4, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4,
                 schedule="constant", attack_steps=1, attack_rel_step=0.25, bn_mode_attack="",
                 bn_mode_loss="", checkpoint_every=5, selection_split="train_holdout",
                 select_size=100, select_every=1, select_steps=1),
      eval=dict(radii=("0.1",), conf_radii=(), norm="linf", n_iter=2, n_restarts=1,
                batch_size=10, seed=0)))
'''


@pytest.mark.slow
def test_launcher_runs_the_main_job_as_two_processes(tmp_path):
  """jax_abstain/cli/multihost.py --local=2: two processes train one model together (per-host
  data shards, joint checkpoints), process 0 selects and saves it, both evaluate (process 0
  merges the report)."""
  (tmp_path / "tiny.py").write_text(_TINY_CONFIG)
  workdir = tmp_path / "wd"
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.cli.multihost", "--local=2", "--",
                         f"--config={tmp_path / 'tiny.py'}", f"--workdir={workdir}"],
                        capture_output=True, text=True, cwd=ROOT, timeout=900,
                        env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "[0] std: natural accuracy" in proc.stdout
  assert "process 1 of 2" in proc.stderr
  results = json.loads((workdir / "results.json").read_text())
  epoch = (1442 - 100) // 64    # steps: the digits train split minus 100 held out, batch 64
  assert results["selected"]["step"] in (epoch, 2 * epoch, 3 * epoch, 4 * epoch)
  assert results["std"]["nat_acc"] > 50
  checkpoint = workdir / "checkpoints" / "std" / str(4 * epoch) / "data"
  assert sorted(p.name for p in checkpoint.iterdir() if p.suffix == ".json") == [
      "process_0-of-2.json", "process_1-of-2.json"]
