"""jobs.schema: the one config check (every problem at once, one line each, typed fields),
and jobs.workdir recording the checked job and refusing another one."""
import dataclasses
import json

import pytest

from jax_abstain import data, jobs
from jax_abstain.configs import evaluate, mnist5k, synth
from jax_abstain.errors import UserError
from jax_abstain.jobs import schema, workdir


def _problems(config) -> list:
  with pytest.raises(UserError) as e:
    schema.check(config)
  return str(e.value).splitlines()


def test_figure1_config_becomes_a_typed_toy2d_job():
  job = schema.check(synth.get_config())
  assert (job.mode, job.name, job.seed, job.eps, job.norm) == ("toy2d", "toy2d", 0, "0.1", "linf")
  assert job.train is None and set(jobs.MODES) == set(schema.MODES)
  t = job.toy2d
  assert list(t.models) == ["era", "era_branch", "std", "trades"]
  # Shared settings with the per-model overrides; eps_factor 2 doubles the training radius.
  assert (t.models["era_branch"].loss, t.models["era_branch"].beta) == ("era", 0.05)
  assert (t.models["era_branch"].eps, t.models["era"].eps) == (0.2, 0.1)
  assert t.models["trades"].trades_beta == 6.0 and t.models["std"].lr == 0.03
  assert (t.branch, t.core, t.select_at, t.grid) == ("era_branch", "std", "0.2", 200)
  # Evaluated at eps and 2 eps in the job's norm with the job's seed.
  assert (job.eval.radii, job.eval.norm, job.eval.n_iter, job.eval.seed) == (("0.1", "0.2"),
                                                                            "linf", 100, 0)
  assert (job.data.name, job.data.n, job.data.data_seed, job.data.eval_split) == (
      "synthetic", 1000, 1, "train")
  assert job.model.options == {"in_features": 2, "hidden": (64, 64, 64)}
  with pytest.raises(dataclasses.FrozenInstanceError):
    job.seed = 1


def test_train_config_fills_every_default():
  job = schema.check(mnist5k.get_config())
  assert job.train.loss == "std" and job.train.eps == 0.1 and job.train.epochs == 2
  assert job.train.selection_split == "none" and job.train.keep_checkpoints == 3
  assert job.data.augment == "none" and job.model.init_dir == ""
  assert job.eval.kind == "empirical" and job.eval.radii == ("0.1", "0.2")
  assert job.toy2d is None


def test_every_problem_is_reported_once_on_its_own_line():
  config = synth.get_config()
  config.seed = -1
  config.data.name = "nope"
  config.train.momentum = 1.5
  config.compose.core = "zz"
  config.compose.select_at = "1/0"
  config.plot.grid = 1
  # Other tests register data sets in this process: the known names are data.names().
  known = ", ".join(data.names())
  assert _problems(config) == [
      "config.seed: expected an integer >= 0, got -1",
      f"config.data.name: unknown data set 'nope'; known: {known}",
      "config.train.momentum: expected a finite number in [0.0, 1.0), got 1.5",
      "config.compose.core: 'zz' is not one of config.models (era, era_branch, std, trades)",
      "config.compose.select_at: division by zero in '1/0'; expected e.g. 1/255",
      "config.plot.grid: expected an integer >= 2, got 1"]


def test_names_fields_and_paths_are_checked(tmp_path):
  config = mnist5k.get_config().to_dict()
  config["extra"] = 1
  config["data"].update(augment="nope", path=str(tmp_path / "missing.tgz"), colour=True)
  config["model"].update(name="resnet-9000")
  config["train"].update(loss="nope", schedule="x")
  config["eval"].update(n_iter=0)
  problems = _problems(config)
  assert problems[0].startswith("config.extra: unknown field; known: mode, name, seed, eps, norm")
  assert "config.data.colour: unknown field" in problems[1]
  assert f"config.data.path: no such file: {tmp_path / 'missing.tgz'}" in problems
  assert any(p.startswith("config.data.augment: unknown augmentation 'nope'; known: autoaugment")
             for p in problems)
  assert any(p.startswith("config.model.name: unknown model 'resnet-9000'") for p in problems)
  assert "config.train.loss: expected one of std, trades, era, dga, mart, noise, cra, ibp, mma, got 'nope'" \
      in problems
  assert any(p.startswith("config.train.schedule:") for p in problems)
  assert "config.eval.n_iter: expected an integer >= 1, got 0" in problems
  assert len(problems) == 8


def test_mode_model_directories_and_toy2d_models_are_checked(tmp_path):
  assert _problems({"mode": "figure1"}) == [
      "config.mode: expected one of toy2d, train, evaluate, got 'figure1'"]
  assert _problems(evaluate.get_config("data=digits")) == [
      "config.model.dir: give the model directory, e.g. "
      "--config=configs/evaluate.py:model=runs/mnist_std/model"]
  missing = tmp_path / "nothing"
  assert _problems(evaluate.get_config(f"data=digits,model={missing}")) == [
      f"config.model.dir: {missing} is not a model directory (it does not exist)"]
  config = mnist5k.get_config(f"init={missing}")
  assert _problems(config)[0].startswith("config.model.init_dir: ")
  config = synth.get_config()
  config.models.era.loss = "nope"
  config.models.era_branch.eps_factor = 0
  assert _problems(config) == [
      "config.models.era.loss: expected one of std, trades, era, dga, mart, noise, cra, ibp, mma, got 'nope'",
      "config.models.era_branch.eps_factor: expected a finite number in (0.0, inf), got 0"]
  config = synth.get_config()
  config.eval.radii = ("0.3",)
  assert _problems(config) == ["config.eval.radii: set by the toy2d job (eps and 2 eps, "
                               "config.norm, config.seed)"]
  config = synth.get_config()
  config.train.eps = "0.3"      # not a field of the synth config: ConfigDict refuses it
  assert _problems(config) == ["config.train.eps: set by the toy2d job (config.eps times "
                               "config.models.<name>.eps_factor)"]


def test_batch_must_split_over_the_devices():
  import jax
  config = mnist5k.get_config()
  config.train.batch_size = 0
  assert _problems(config) == ["config.train.batch_size: expected an integer >= 1, got 0"]
  if jax.device_count() > 1:   # one CPU device here; main_test forces two
    config.train.batch_size = jax.device_count() + 1
    assert "multiple of the" in _problems(config)[0]


def test_workdir_records_the_checked_job_and_refuses_another(tmp_path):
  job = schema.check(synth.get_config())
  path = workdir.prepare(tmp_path / "wd", job)
  recorded = json.loads((path / "config.json").read_text())
  assert recorded == json.loads(json.dumps(job.to_dict()))
  assert recorded["toy2d"]["models"]["era_branch"]["eps"] == 0.2
  assert recorded["eval"]["radii"] == ["0.1", "0.2"]
  assert "jax" in json.loads((path / "environment.json").read_text())
  assert workdir.prepare(tmp_path / "wd", schema.check(synth.get_config())) == path
  other = synth.get_config()
  other.models.era.beta = 0.7
  with pytest.raises(UserError, match=r"toy2d\.models\.era\.beta \(0\.2 -> 0\.7\)"):
    workdir.prepare(path, schema.check(other))
  with pytest.raises(UserError, match="exists and is not a folder"):
    workdir.prepare(path / "config.json", job)
