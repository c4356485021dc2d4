"""TrainConfig: the paper's defaults, typed values, every problem reported at once.

Expectations are written by hand from the paper's appendix A.2 and the field list in
docs/design.md (Contracts); each test names the wrong implementation it catches.
"""
import dataclasses

import ml_collections
import pytest

from jax_abstain.errors import UserError
from jax_abstain.training import config as config_lib
from jax_abstain.training.config import TrainConfig

DESIGN_FIELDS = (
    "loss beta trades_beta eps norm variant epochs batch_size lr momentum weight_decay schedule "
    "attack_steps attack_rel_step bn_mode_attack bn_mode_loss sigma num_noise gamma "
    "beta_decay_every beta_decay checkpoint_every keep_checkpoints log_every selection_split "
    "select_size select_every select_steps select_rel_step select_batch_size select_eps "
    "ibp_kappa ibp_warmup ibp_ramp").split()


def test_fields_are_the_design_contract():
  # Catches a field renamed or dropped (the jobs schema and config files name these).
  assert [f.name for f in dataclasses.fields(TrainConfig)] == DESIGN_FIELDS


def test_defaults_are_the_papers_recipe():
  # Paper appendix A.2: 50 epochs, SGD lr 1e-3, momentum 0.9, wd 1e-4, batch 200, TRADES
  # schedule, 10-step PGD at 0.25 eps, beta 1, TRADES beta 6; section 4.2: sigma 0.25, gamma
  # 4, and the authors' draws (0: the loss's own). Catches a default copied from a toy config
  # (e.g. lr 0.03, batch 10).
  c = TrainConfig()
  assert (c.loss, c.epochs, c.batch_size, c.lr, c.momentum, c.weight_decay) == \
      ("era", 50, 200, 1e-3, 0.9, 1e-4)
  assert (c.schedule, c.attack_steps, c.attack_rel_step, c.beta, c.trades_beta) == \
      ("trades", 10, 0.25, 1.0, 6.0)
  assert (c.sigma, c.num_noise, c.gamma, c.variant, c.norm) == (0.25, 0, 4.0, "paper", "linf")
  assert c.eps == 2 / 255 and c.select_eps is None and c.selection_eps == 2 / 255
  assert (c.select_every, c.select_steps, c.select_rel_step, c.selection_split) == \
      (5, 40, 0.1, "none")


def test_a_plain_dict_with_a_radius_string():
  # Catches eps kept as the string "0.1" (arithmetic downstream would fail) and mappings
  # that must name every field.
  c = TrainConfig.from_config({"loss": "era", "eps": "0.1"})
  assert c.eps == 0.1 and isinstance(c.eps, float) and c.epochs == 50
  assert TrainConfig.from_config({"eps": "8/255"}).eps == 8 / 255


def test_configdict_and_trainconfig_inputs():
  d = ml_collections.ConfigDict({"loss": "trades", "batch_size": 10, "select_eps": ""})
  c = TrainConfig.from_config(d)
  assert (c.loss, c.batch_size, c.select_eps) == ("trades", 10, None)
  assert TrainConfig.from_config(c) is c
  assert TrainConfig.from_config({"norm": "L2"}).norm == "l2"


def test_bn_modes_resolve_per_loss():
  # The authors freeze BN statistics for ERA/DGA, attack in eval mode in TRADES and train the
  # TRADES/CRA loss in train mode (appendix A1); catches resolving "" at construction (a later
  # `replace(loss=...)` would keep the old mode).
  era = TrainConfig(loss="era")
  assert (era.bn_attack, era.bn_loss) == ("eval", "eval")
  trades = dataclasses.replace(era, loss="trades")
  assert (trades.bn_attack, trades.bn_loss) == ("eval", "train")
  switched = TrainConfig(loss="trades", bn_mode_attack="train")
  assert (switched.bn_attack, switched.bn_loss) == ("train", "train")
  for loss in ("std", "mart", "noise", "cra"):
    assert (TrainConfig(loss=loss).bn_attack, TrainConfig(loss=loss).bn_loss) == ("train", "train")
  assert tuple(config_lib.LOSS_DEFAULT_BN) == tuple(config_lib.ATTACK_DEFAULT_BN) == config_lib.LOSSES


def test_noise_draws_follow_the_authors_per_loss():
  # The authors' L_noise draws one Gaussian copy per input, their CRA 16 (appendix A2); an
  # explicit num_noise wins, and 0 resolves late (a `replace(loss=...)` follows the loss).
  noise = TrainConfig(loss="noise")
  assert (noise.num_noise, noise.noise_draws) == (0, 1)
  assert dataclasses.replace(noise, loss="cra").noise_draws == 16
  assert TrainConfig(loss="noise", num_noise=16).noise_draws == 16
  assert TrainConfig(loss="cra", num_noise=4).noise_draws == 4


def test_every_problem_is_reported_once_one_line_each():
  # Catches stopping at the first problem, and an unknown field silently ignored.
  bad = {"loss": "nope", "lr": -1, "epochs": 2.5, "eps": "0", "sigma": -0.1, "num_noise": -1,
         "bn_mode_loss": "frozen", "selection_split": "val", "momentum": 1.0, "typo": 3}
  with pytest.raises(UserError) as info:
    TrainConfig.from_config(bad, name="config.train")
  lines = str(info.value).splitlines()
  assert len(lines) == 10
  assert lines[0].startswith("config.train.typo: unknown field; known: loss, beta,")
  fields = sorted(line.split(":")[0] for line in lines)
  assert fields == sorted(f"config.train.{k}" for k in bad)
  assert "config.train.lr: expected a finite number in [0.0, inf), got -1" in lines
  assert "config.train.epochs: expected an integer >= 1, got 2.5" in lines
  assert "config.train.bn_mode_loss: expected train, eval or '' (the loss's default), got 'frozen'" in lines


@pytest.mark.parametrize("field,value", [
    ("batch_size", 0), ("attack_steps", 0), ("keep_checkpoints", 0), ("select_size", 0),
    ("select_every", -1), ("checkpoint_every", -1), ("beta", -0.5), ("weight_decay", -1e-4),
    ("attack_rel_step", 0.0), ("gamma", 0.0), ("beta_decay", 0.0), ("epochs", True),
    ("variant", "authors"), ("schedule", "cosine"), ("select_eps", "-1/255"),
    ("lr", float("nan")), ("eps", "1/0")])
def test_out_of_range_values_name_their_field(field, value):
  # Catches a range check missing for one field (each of these would train nonsense or crash
  # hours later: zero steps, a negative decay, NaN learning rate, True read as 1 epoch).
  with pytest.raises(UserError, match=rf"^train\.{field}: "):
    TrainConfig.from_config({field: value})


def test_boundary_values_are_accepted():
  # Catches off-by-one ranges: 0 means "every epoch"/"none" for these, lr 0 and momentum 0 are
  # plain SGD settings, a large batch is checked against devices later (`loop.plan`).
  c = TrainConfig.from_config({"lr": 0, "momentum": 0.0, "checkpoint_every": 0,
                               "select_every": 0, "beta": 0, "beta_decay_every": 0})
  assert (c.lr, c.momentum, c.select_every) == (0.0, 0.0, 0)
  assert isinstance(c.lr, float)


def test_direct_construction_is_checked_too():
  # Catches a dataclass whose checks only run in from_config (replace() would bypass them).
  with pytest.raises(UserError, match=r"train\.lr"):
    dataclasses.replace(TrainConfig(), lr=-1.0)
  with pytest.raises(dataclasses.FrozenInstanceError):
    TrainConfig().lr = 1.0
