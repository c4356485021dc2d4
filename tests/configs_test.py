"""Every paper config: docstring starts with its run command, its model and settings resolve,
and a tiny end-to-end train-mode run on generated images of the config's shape succeeds
(train, select on validation, save, evaluate), with nothing downloaded."""
import json
import pathlib

import numpy as np
import pytest

from jax_abstain.configs import cifar10_cra, cifar10_era, cifar10_trades, cifar100_era, mtsd_era
from jax_abstain import data, models
from jax_abstain.jobs import train
from jax_abstain.training import config as train_config

CONFIGS = {"cifar10_era": (cifar10_era, 32), "cifar10_trades": (cifar10_trades, 32),
           "cifar100_era": (cifar100_era, 32), "cifar10_cra": (cifar10_cra, 32),
           "mtsd_era": (mtsd_era, 64)}


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


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_docstring_starts_with_the_run_command_and_the_model_resolves(name):
  module, _ = CONFIGS[name]
  first = module.__doc__.strip().splitlines()[0]
  assert first.startswith(f"python -m jax_abstain.main --config=configs/{name}.py"), first
  assert "--workdir=" in first
  config = module.get_config()
  assert config.mode == "train" and config.train.epochs == 50 and config.train.lr > 0
  _, options = models.resolve(config.model.name, num_classes=config.model.num_classes)
  assert options["num_classes"] == config.model.num_classes
  assert config.train.loss in train_config.LOSSES


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tiny_run_on_generated_images(name, tmp_path):
  module, size = CONFIGS[name]
  config = module.get_config("epochs=1,batch=4,select_size=4,select_every=1,eval_limit=4")
  data.register(f"generated{size}", _generated(size, config.model.num_classes))
  config.data.name = f"generated{size}"
  config.model.name = "mlp"
  config.model.options = {"in_features": size * size * 3, "hidden": (8,)}
  config.train.update(attack_steps=1, select_steps=1, num_noise=2, checkpoint_every=2)
  config.eval.batch_size = 4
  if config.eval.get("kind") == "certified":
    config.eval.update(n0=4, n=16, batch_size=16)
  else:
    config.eval.n_iter = 2
  results = train.train_and_evaluate(config, tmp_path)
  summary = results[config.name]
  assert summary["n"] == 4
  assert results["selected"]["step"] == 5       # (24 - 4 held out) // 4 steps, validated once
  assert (tmp_path / "model" / "manifest.json").is_file()
  assert json.loads((tmp_path / "results.json").read_text())["loss"] == config.train.loss
  lines = [json.loads(l) for l in (tmp_path / f"metrics_{config.name}.jsonl").read_text().splitlines()]
  assert {l["kind"] for l in lines} == {"train", "val"}
  assert sorted(p.name for p in pathlib.Path(tmp_path, "checkpoints", config.name).iterdir()
                if p.name.isdigit()) == ["2", "4", "5"]
