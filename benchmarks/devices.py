"""Evaluation and certification throughput on 1, 2 and 4 forced CPU devices and on 2 local
processes (`jax.distributed` on 127.0.0.1), as images/s and the ratio to one device.

Every configuration is a fresh process (the device count is fixed when JAX starts): it loads
the std-trained MNIST CNN of the APGD section, compiles on a warm-up report, then times
`evaluation.evaluate` writing a report (APGD-CE at 0.1, 10 steps; CERTIFY with n0 = 100) from
the start until the merged report exists. On a 2-core machine, 4 devices or 2 processes share
the same 2 cores as 1 device: the ratio measures the overhead of splitting (sharding, padding,
per-process ranges and the file handshake), not a speed-up. The reports of every configuration
are also compared byte for byte.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

from benchmarks import apgd as apgd_bench, timing

ROOT = pathlib.Path(__file__).resolve().parent.parent

# argv: model dir, workdir, n attack images, n certified images, n draws, process id, count, port.
WORKER = """
import json, pathlib, sys, time
model_dir, wd = sys.argv[1], pathlib.Path(sys.argv[2])
n_emp, n_cert, n_draws, k, count, port = map(int, sys.argv[3:9])
from jax_abstain.training import distributed
if count > 1:
  distributed.initialize(f"127.0.0.1:{port}", count, k)
import jax
from jax.experimental import multihost_utils
from jax_abstain import data, evaluation, models
model = models.load(model_dir)
x, y = data.load("mnist5k", "test")
emp = evaluation.EvalConfig.from_config({"radii": ("0.1",), "n_iter": 10, "batch_size": 16})
cert = evaluation.EvalConfig.from_config({"kind": "certified", "radii": ("0.5",), "sigma": 0.25,
                                          "n0": 100, "n": n_draws, "noise_batch_size": 400})
out = {}
for name, cfg, n in (("emp", emp, n_emp), ("cert", cert, n_cert)):
  warm = (16 if name == "emp" else 4) * jax.local_device_count() * count
  evaluation.evaluate(model, x[-warm:], y[-warm:], cfg, report_path=wd / f"warm_{name}.csv",
                      sample_idx=list(range(len(x) - warm, len(x))), progress=False)
  if count > 1:
    multihost_utils.sync_global_devices(name)
  t = time.perf_counter()
  evaluation.evaluate(model, x[:n], y[:n], cfg, report_path=wd / f"{name}.csv", progress=False)
  out[name] = time.perf_counter() - t
if k == 0:
  print("RESULT", json.dumps(out))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _config(model_dir, wd, sizes, devices, processes) -> dict:
  """Seconds of the attack and the certification run of one configuration."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=flags.strip())
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(model_dir), str(wd),
                             *map(str, sizes), str(k), str(processes), str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for k in range(processes)]
  outs = [p.communicate(timeout=3600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    if p.returncode:
      raise RuntimeError(err[-3000:])
  line = next(l for l in outs[0][0].splitlines() if l.startswith("RESULT"))
  return json.loads(line.split(" ", 1)[1])


def run(quick: bool, peak: float) -> str:
  del peak
  sizes = (32, 8, 1000) if quick else (128, 16, 4000)   # attack images, certified images, n
  model, source = apgd_bench.mnist_model()
  from jax_abstain import models  # pylint: disable=import-outside-toplevel
  configs = [("1 device", 1, 1), ("2 devices", 2, 1), ("4 devices", 4, 1),
             ("2 processes x 1 device", 1, 2)]
  rows, results, reports = [], {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    model_dir = models.save(model, tmp / "model", arch="small-cnn", options={"num_classes": 10})
    for name, devices, processes in configs:
      wd = tmp / name.replace(" ", "_")
      wd.mkdir()
      results[name] = _config(model_dir, wd, sizes, devices, processes)
      reports[name] = [(wd / f).read_bytes() for f in ("emp.csv", "cert.csv")]
  base = results["1 device"]
  for name, _, _ in configs:
    r = results[name]
    rows.append([name, f"{r['emp']:.2f}", f"{sizes[0] / r['emp']:.1f}",
                 f"{base['emp'] / r['emp']:.2f}x", f"{r['cert']:.2f}",
                 f"{sizes[1] / r['cert']:.2f}", f"{base['cert'] / r['cert']:.2f}x"])
  same = all(v == reports["1 device"] for v in reports.values())
  text = (f"Model: the small MNIST CNN, {source}. Attack: APGD-CE at Linf 0.1, 10 steps, "
          f"{sizes[0]} test digits, 16 per device per chunk. CERTIFY: {sizes[1]} digits, "
          f"sigma 0.25, n0 100, n {sizes[2]:,}, 400 noisy inputs per device per pass. Each "
          "configuration is a fresh process (or two) that compiles on a warm-up report first; "
          "times run from the start of `evaluation.evaluate` to the finished (merged) report. "
          "**This machine has 2 cores shared with other jobs: 2 or 4 forced devices and 2 "
          "processes split the same cores, so the ratio to one device measures the overhead "
          "of splitting (sharding, padding, per-process ranges, the file handshake), not a "
          "speed-up.** On real accelerators or hosts each device adds its own compute.\n\n")
  text += timing.table(["configuration", "attack s", "attack images/s", "vs 1 device",
                        "certify s", "certify images/s", "vs 1 device"], rows)
  text += (f"\n\nReports byte-identical across the four configurations: "
           f"**{'yes' if same else 'NO'}**.\n")
  return text
