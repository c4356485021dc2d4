"""The headline job from nothing (issue 18, item 3): configs/cifar10_era.py with no data and no
model prepared, everything served from 127.0.0.1: a tiny CIFAR-10 archive in the official
format (`tiny_cifar`) and a small Carmon2019Unlabeled checkpoint written by RobustBench's own
WideResNet (depth 10, width 1; `torch_reference_models`), as its Drive file comes. The job
downloads both, fine-tunes the ERA branch from the RobustBench model, evaluates branch and
core, composes them and writes Table 1, the reports and Fig. 2-4; every problem with the
data or the models stops it before the workdir exists.
"""
import csv
import hashlib
import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import loopback_server  # noqa: E402
import tiny_cifar  # noqa: E402
import torch_reference_models as T  # noqa: E402
from jax_abstain import configs, download  # noqa: E402
from jax_abstain.data import cifar  # noqa: E402
from jax_abstain.errors import UserError  # noqa: E402
from jax_abstain.jobs import inputs, schema, train, workdir as workdir_lib  # noqa: E402
from jax_abstain.porting import robustbench  # noqa: E402

CARMON_ID = robustbench.entry("Carmon2019Unlabeled")["gdrive_ids"][0]
WANG_ID = robustbench.entry("Wang2020Improving")["gdrive_ids"][0]   # the same WRN family
SMALL = {"depth": 10, "widen_factor": 1}
ARCHIVE = tiny_cifar.archive_bytes("cifar10", n=8)   # 40 train, 8 test images


def _small_wrn(seed):
  """RobustBench's WideResNet as Carmon2019Unlabeled and Wang2020Improving build it, small."""
  wrn = T.robustbench_architecture("wide_resnet").WideResNet
  return T.randomize(wrn(depth=10, widen_factor=1, sub_block1=True), seed=seed)


def _checkpoint(module) -> bytes:
  buf = io.BytesIO()   # as Carmon2019Unlabeled's file: {'state_dict': {'module.*': ...}}
  torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, buf)
  return buf.getvalue()


@pytest.fixture
def served(tmp_path, monkeypatch):
  """The loopback server with the archive and two checkpoints; the caches in tmp_path."""
  start, core = _small_wrn(11), _small_wrn(12)
  files = {"/c/cifar-10-python.tar.gz": ARCHIVE, f"/rb/{CARMON_ID}": _checkpoint(start),
           f"/rb/{WANG_ID}": _checkpoint(core)}
  monkeypatch.setenv(download.ENV_CACHE, str(tmp_path / "cache"))
  monkeypatch.setenv(download.ENV_DATA, str(tmp_path / "data"))
  monkeypatch.setitem(cifar.ARCHIVES, "cifar10", ("cifar-10-python.tar.gz",
                                                  hashlib.md5(ARCHIVE).hexdigest()))
  with loopback_server.serve(files) as server:
    monkeypatch.setenv(cifar.ENV_URL, server.url("/c"))
    monkeypatch.setenv(robustbench.ENV_URL, server.url("/rb/{id}"))
    yield server, core


def _tiny_config(**changes):
  config = configs.build("cifar10_era", "epochs=1,batch=8,select_size=8,select_every=1")
  config.model.options = dict(SMALL)
  config.compose.options = dict(SMALL)
  config.train.update(attack_steps=1, select_steps=1, select_batch_size=8, checkpoint_every=2)
  config.eval.update(n_iter=2, batch_size=8)
  for key, value in changes.items():
    section, field = key.split("__")
    config[section][field] = value
  return config


def _run_like_the_command_line(config, workdir):
  """What `python -m jax_abstain.main` does: check, fetch, prepare the workdir, run."""
  job = schema.check(config)
  inputs.fetch(job, progress=False)
  return train.run(job, workdir_lib.prepare(workdir, job))


def _columns(path):
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


@pytest.mark.slow
def test_headline_config_from_nothing(served, tmp_path):
  server, module = served   # module: the core, RobustBench's own WideResNet
  workdir = tmp_path / "run"
  # Start Carmon2019Unlabeled, core Wang2020Improving: two different served models.
  results = _run_like_the_command_line(_tiny_config(compose__core="Wang2020Improving"), workdir)
  assert sorted(p for p, _ in server.requests) == sorted([
      "/c/cifar-10-python.tar.gz", f"/rb/{CARMON_ID}", f"/rb/{WANG_ID}"])
  # The branch was fine-tuned from the RobustBench model, not from random weights.
  manifest = json.loads((workdir / "model" / "manifest.json").read_text())
  assert manifest["source"]["robustbench"] == "Carmon2019Unlabeled"
  assert manifest["architecture"] == "Carmon2019Unlabeled"
  # The core's report predicts what RobustBench's own module predicts on the test images.
  core = _columns(workdir / "reports" / "Wang2020Improving.csv")
  x, y = cifar.load_archive("cifar10", "test", tmp_path / "data" / "cifar-10-python.tar.gz")
  with torch.no_grad():
    torch_pred = module(torch.from_numpy(x.transpose(0, 3, 1, 2) / 255.0).float()).argmax(1)
  np.testing.assert_array_equal(core["pred"], torch_pred.numpy())
  np.testing.assert_array_equal(core["label"], y)
  branch = _columns(workdir / "reports" / "era.csv")
  assert (branch["pred"] != core["pred"]).any()   # two models: the selector matters
  # Table 1 by hand (eq. 12): select where the branch is robust at 2 eps = 2/255.
  s = branch["is_rob@2/255"].astype(bool)
  acc = np.where(s, branch["is_acc"], core["is_acc"])
  rob = np.where(s, branch["is_rob@1/255"], core["is_rob@1/255"])
  core_row, comp_row = results["table1"]
  assert core_row["nat_acc"] == pytest.approx(100 * core["is_acc"].mean(), abs=0.01)
  assert core_row["rob_acc"] == pytest.approx(
      100 * (core["is_acc"] * core["is_rob@1/255"]).mean(), abs=0.01)
  assert comp_row["nat_acc"] == pytest.approx(100 * acc.mean(), abs=0.01)
  assert comp_row["rob_acc"] == pytest.approx(100 * (acc * rob).mean(), abs=0.01)
  assert comp_row["rob_sel"] == pytest.approx(100 * s.mean(), abs=0.01)
  assert "| model " in (workdir / "table1.md").read_text()
  for figure in ("fig2_rob_acc_vs_rob_inacc.png", "fig3_rob_sel_vs_rob_acc.png",
                 "fig4_composition.png"):
    assert (workdir / "report" / figure).stat().st_size > 1000
  assert json.loads((workdir / "results.json").read_text())["core"] == "Wang2020Improving"


def test_problems_with_data_or_models_stop_before_the_workdir(served, tmp_path, monkeypatch):
  server, _ = served
  workdir = tmp_path / "run"
  monkeypatch.setitem(cifar.ARCHIVES, "cifar10", ("cifar-10-python.tar.gz", "0" * 32))
  with pytest.raises(UserError, match="failed its check"):
    _run_like_the_command_line(_tiny_config(), workdir)
  monkeypatch.setitem(cifar.ARCHIVES, "cifar10", ("cifar-10-python.tar.gz",
                                                  hashlib.md5(ARCHIVE).hexdigest()))
  del server.files[f"/rb/{CARMON_ID}"]   # the model is not where the id says
  with pytest.raises(UserError, match=r"config.model.robustbench: cannot download "
                                      r"Carmon2019Unlabeled.pt .*HTTP 404"):
    _run_like_the_command_line(_tiny_config(), workdir)
  with pytest.raises(UserError, match="no start model"):
    _run_like_the_command_line(_tiny_config(model__robustbench=""), workdir)
  assert not workdir.exists()
