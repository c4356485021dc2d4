"""Evaluation and certification over several devices: the attack and CERTIFY batches are
split over 4 forced CPU devices (a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``) and the reports are byte-identical to
those of this single-device process (APGD-CE, AutoAttack and CERTIFY reports)."""
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# argv: model dir, output dir, batch size. Prints the device count the runner split over.
SCRIPT = """
import pathlib, sys
import jax
from jax_abstain import data, models, evaluation
from jax_abstain.evaluation import runner
model = models.load(sys.argv[1])
out, batch = pathlib.Path(sys.argv[2]), int(sys.argv[3])
x, y = data.load("digits", "test")
x, y = x[:13], y[:13]
emp = evaluation.EvalConfig.from_config({"radii": ("0.05", "0.1"), "conf_radii": ("0.1",),
                                        "n_iter": 5, "batch_size": batch})
evaluation.evaluate(model, x, y, emp, report_path=out / "emp.csv", progress=False)
cert = evaluation.EvalConfig.from_config({"kind": "certified", "radii": ("0.1",), "sigma": 0.25,
                                         "n0": 20, "n": 300, "noise_batch_size": 100 * batch})
evaluation.evaluate(model, x[:7], y[:7], cert, report_path=out / "cert.csv", progress=False)
aa = evaluation.EvalConfig.from_config({"radii": ("0.1",), "attack": "autoattack",
                                       "autoattack": {"n_iter": 5, "n_queries": 20},
                                       "batch_size": batch})
evaluation.evaluate(model, x, y, aa, report_path=out / "aa.csv", progress=False)
print("devices", len(runner.ModelRunner(model).state["head"]["kernel"].sharding.device_set))
"""


def _run(model_dir, out, batch, devices):
  # This process's XLA flags (conftest: the command lines' XLA:CPU setting) plus the devices.
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=flags.strip())
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model_dir), str(out), str(batch)],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


@pytest.mark.slow
def test_reports_identical_on_one_and_four_devices(tmp_path):
  sys.path.insert(0, str(ROOT / "tests"))
  import tiny_digits_model  # pylint: disable=import-outside-toplevel
  model_dir = tiny_digits_model.train_and_save(tmp_path / "model", steps=40)
  one, four = tmp_path / "one", tmp_path / "four"
  # Batch 5 per device: 13 samples are 3 chunks on one device, one padded chunk of 20 on 4.
  exec_globals = {"__name__": "one"}
  argv = sys.argv
  try:
    sys.argv = ["-c", str(model_dir), str(one), "5"]
    exec(SCRIPT, exec_globals)   # pylint: disable=exec-used
  finally:
    sys.argv = argv
  assert jax.local_device_count() == 1
  assert "devices 4" in _run(model_dir, four, 5, 4)
  for name in ("emp.csv", "cert.csv", "aa.csv"):
    a, b = (one / name).read_bytes(), (four / name).read_bytes()
    assert a == b, name
    rows = a.decode().splitlines()
    assert len(rows) == 1 + (7 if name == "cert.csv" else 13)
  # The attack did something: some digits are not robust at 0.1, and some are certified.
  emp = np.loadtxt(one / "emp.csv", delimiter=",", skiprows=1)
  assert 0 < emp[:, 6].sum() < 13
  cert = np.loadtxt(one / "cert.csv", delimiter=",", skiprows=1)
  assert (cert[:, 5] >= 0).any() and (cert[:, 6] > 0).any()
