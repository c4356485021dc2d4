"""The packaged configs: each docstring starts with its run command, each builds a job that
`jobs.schema.check` accepts, explicit arguments win over per-loss defaults, and a tiny
end-to-end train job on generated images of each paper config's shape succeeds (train,
select on validation, save, evaluate), with nothing downloaded."""
import json
import pathlib

import numpy as np
import pytest

from jax_abstain import configs, data, models, radii
from jax_abstain.configs import common, evaluate, evaluate_certified, mnist5k
from jax_abstain.errors import UserError
from jax_abstain.jobs import schema, train
from jax_abstain.training.config import LOSSES
from tiny_digits_model import train_and_save

# The paper's configs and the side of their images.
PAPER = {"cifar10_era": 32, "cifar10_trades": 32, "cifar100_era": 32, "cifar10_cra": 32,
         "mtsd_era": 64}
# Paper configs whose start model is on no RobustBench leaderboard: init= is required.
NO_START = ("cifar10_cra", "mtsd_era")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return train_and_save(tmp_path_factory.mktemp("configs") / "model", steps=0)


def _generated(size, num_classes):
  """Images [N, size, size, 3] in [0, 1] whose class sets the mean brightness (learnable)."""
  def load(split, path=None):
    del path
    n = 24 if split == "train" else 8
    rng = np.random.default_rng(0 if split == "train" else 1)
    y = (np.arange(n) % 4).astype(np.int32) * (num_classes // 4)
    x = np.clip(rng.normal(0.2 + 0.2 * (y[:, None, None, None] % 4), 0.1, (n, size, size, 3)), 0, 1)
    return x.astype(np.float32), y
  return load


def test_every_packaged_config_is_listed_and_resolves_by_name():
  assert set(PAPER) | {"synth", "mnist5k", "mnist_era", "evaluate", "evaluate_certified"} \
      == set(configs.names())
  for name in configs.names():
    path = configs.HERE / f"{name}.py"
    assert configs.resolve(name) == str(path) == configs.resolve(f"configs/{name}.py")
  assert configs.resolve("synth:eps=0.2") == f"{configs.HERE / 'synth.py'}:eps=0.2"
  with pytest.raises(UserError, match="no packaged config"):
    configs.resolve("nope")


@pytest.mark.parametrize("name", sorted(configs.names()))
def test_docstring_starts_with_the_run_command_and_the_job_checks(name, model_dir):
  module_doc = (configs.HERE / f"{name}.py").read_text().split('"""')[1]
  first = module_doc.strip().splitlines()[0]
  assert first.startswith(f"python -m jax_abstain.main --config=configs/{name}.py"), first
  assert "--workdir=" in first
  arg = {"model": str(model_dir), "data": "digits"} if name.startswith("evaluate") else None
  if name in NO_START:
    arg = {"init": str(model_dir)}
  job = schema.check(configs.build(name, arg))
  assert job.mode == {"synth": "toy2d"}.get(name, "evaluate" if name.startswith("evaluate")
                                             else "train")


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_follow_the_recipe(name, model_dir):
  job = schema.check(configs.build(name, {"init": str(model_dir)} if name in NO_START else None))
  assert job.train.epochs == 50 and job.train.lr > 0 and job.train.loss in LOSSES
  if name in NO_START:
    assert (job.model.name, job.model.robustbench, job.compose) == ("", "", None)
  else:   # from nothing: a RobustBench start and core of the data set's leaderboard
    arch = schema.robustbench_architecture(job.model.robustbench, job.data.name, "Linf")
    assert models.resolve(arch)[1]["num_classes"] == job.model.num_classes
    assert job.compose.core and job.data.path == "" and job.model.init_dir == ""
    assert job.compose.select_at == "" and radii.parse_radius(job.eps) * 2 == pytest.approx(
        radii.parse_radius(job.train.eps))   # the branch is trained at 2 eps
  # The certified losses are evaluated by CERTIFY at the L2 radius, the others by APGD-CE.
  assert job.eval.kind == ("certified" if job.train.loss in ("cra", "noise") else "empirical")


@pytest.mark.parametrize("arg,message", [
    ("start=,core=", "config.model: no start model: give model.robustbench=NAME"),
    ("start=Carmon2019Unlabeld", "config.model.robustbench: unknown RobustBench cifar10 Linf "
                                 "model 'Carmon2019Unlabeld'; did you mean Carmon2019Unlabeled"),
    ("core=Chen2020Adversarial", "config.compose.core: RobustBench's cifar10 Linf "
                                 "Chen2020Adversarial is not supported"),
    ("threat_model=L1", "config.model.threat_model: expected one of Linf, L2"),
])
def test_fine_tuning_without_a_usable_start_or_core_is_refused(arg, message):
  with pytest.raises(UserError, match=message):
    schema.check(configs.build("cifar10_era", arg))


def test_one_start_model_and_a_core_with_a_threat_radius(model_dir):
  config = configs.build("cifar10_era", {"init": str(model_dir)})
  job = schema.check(config)   # init wins over the default RobustBench start
  assert (job.model.init_dir, job.model.robustbench) == (str(model_dir), "")
  config.model.robustbench = "Carmon2019Unlabeled"
  with pytest.raises(UserError, match="give one start model, got model.init_dir and "
                                      "model.robustbench"):
    schema.check(config)
  config = configs.build("cifar10_era")
  config.compose.core_dir = str(model_dir)
  with pytest.raises(UserError, match="compose.core=<RobustBench name> or compose.core_dir"):
    schema.check(config)
  config = configs.build("cifar10_era").to_dict()
  del config["eps"]
  with pytest.raises(UserError, match="config.eps: a train job that composes needs"):
    schema.check(config)


def test_explicit_arguments_win_over_the_loss_defaults():
  assert mnist5k.get_config("loss=era,epochs=5,init=x").train.epochs == 5
  assert mnist5k.get_config({"loss": "era", "epochs": 5, "init": "x"}).train.epochs == 5
  assert mnist5k.get_config("loss=era,train_limit=0").data.train_limit == 0
  era, std = mnist5k.get_config("loss=era"), mnist5k.get_config()
  assert (era.train.epochs, era.data.train_limit, era.train.lr) == (1, 1000, 0.01)
  assert (std.train.epochs, std.data.train_limit, std.train.lr) == (2, 0, 0.05)
  assert std.train.eps == "0.1" and tuple(std.eval.radii) == ("0.1", "0.2")


def test_parse_arg_takes_text_or_a_dict():
  assert common.parse_arg("a=2,b=yes", a=1, b=False, c="x").to_dict() == {"a": 2, "b": True,
                                                                          "c": "x"}
  assert common.parse_arg({"a": "3", "c": "y"}, a=1, c="x").to_dict() == {"a": 3, "c": "y"}
  assert common.parse_items("k=v, n=1") == {"k": "v", "n": "1"}
  with pytest.raises(UserError, match="unknown config argument 'd'; known arguments: a"):
    common.parse_arg({"d": 1}, a=1)
  with pytest.raises(UserError, match="expected an integer"):
    common.parse_arg("a=x", a=1)
  with pytest.raises(UserError, match="either after ':' or as arg"):
    configs.build("synth:eps=0.2", {"eps": "0.3"})


def test_certified_evaluation_is_the_evaluate_job_with_kind_certified(model_dir):
  given = dict(model=str(model_dir), data="digits", limit=20)
  attacked = evaluate.get_config(given)
  certified = evaluate_certified.get_config({**given, "sigma": 0.25, "n": 1000})
  for key in ("mode", "name", "seed", "data", "model"):
    assert certified[key] == attacked[key], key
  job = schema.check(certified)
  assert job.eval.kind == "certified" and job.eval.radii == ("0.25", "0.5")
  assert (job.eval.sigma, job.eval.n, job.eval.norm) == (0.25, 1000, "l2")
  assert schema.check(attacked).eval.radii == ("1/255", "2/255")


@pytest.mark.parametrize("name", sorted(PAPER))
def test_tiny_run_on_generated_images(name, tmp_path):
  size = PAPER[name]
  config = configs.build(name, "epochs=1,batch=4,select_size=4,select_every=1,eval_limit=4,"
                               "start=,core=,arch=mlp")
  data.register(f"generated{size}", _generated(size, config.model.num_classes))
  config.data.name = f"generated{size}"
  config.model.options = {"in_features": size * size * 3, "hidden": (8,)}
  config.train.update(attack_steps=1, select_steps=1, num_noise=2, checkpoint_every=2)
  config.eval.batch_size = 4
  if config.eval.kind == "certified":
    config.eval.update(n0=4, n=16, noise_batch_size=16)
  else:
    config.eval.n_iter = 2
  results = train.run(schema.check(config), tmp_path)
  assert results[config.name]["n"] == 4
  assert results["selected"]["step"] == 5       # (24 - 4 held out) // 4 steps, validated once
  assert (tmp_path / "model" / "manifest.json").is_file()
  assert json.loads((tmp_path / "results.json").read_text())["loss"] == config.train.loss
  lines = [json.loads(l) for l in (tmp_path / f"metrics_{config.name}.jsonl").read_text().splitlines()]
  assert {l["kind"] for l in lines} == {"train", "val"}
  assert sorted(p.name for p in pathlib.Path(tmp_path, "checkpoints", config.name).iterdir()
                if p.name.isdigit()) == ["2", "4", "5"]
