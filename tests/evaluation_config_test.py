"""EvalConfig: the paper's defaults, canonical values, and every problem refused at once."""
import dataclasses

import ml_collections
import pytest

from jax_abstain.errors import UserError
from jax_abstain.evaluation.config import EvalConfig


def test_defaults_are_the_papers():
  cfg = EvalConfig.from_config({})
  assert dataclasses.asdict(cfg) == {
      "kind": "empirical", "radii": (), "conf_radii": (), "norm": "linf", "n_iter": 40,
      "n_restarts": 1, "batch_size": 500, "seed": 0, "attack": "apgd-ce", "autoattack": {},
      "sigma": 0.12, "n0": 100, "n": 100_000, "alpha": 0.001, "noise_batch_size": 1000}
  assert not cfg.certified
  assert EvalConfig.from_config(None) == cfg


def test_values_become_canonical_from_a_config_dict():
  config = ml_collections.ConfigDict(dict(
      radii=("1/255", 2 / 255, 0.1), conf_radii="2/255", norm="L2", attack="autoattack",
      autoattack=dict(version="standard", attacks_to_run=("apgd-ce", "fab-t"), n_iter=5)))
  cfg = EvalConfig.from_config(config, name="config.eval")
  assert cfg.radii == ("1/255", "2/255", "0.1")
  assert cfg.conf_radii == ("2/255",)
  assert cfg.norm == "l2"
  assert cfg.autoattack == {"version": "standard", "attacks_to_run": ["apgd-ce", "fab-t"],
                            "n_iter": 5}
  # An EvalConfig passes through unchanged.
  assert EvalConfig.from_config(cfg) == cfg


def test_certified_kind():
  cfg = EvalConfig.from_config({"kind": "certified", "sigma": 0.25, "n": 1000,
                                "radii": (0.25, 0.5)})
  assert cfg.certified and cfg.sigma == 0.25 and cfg.n == 1000 and cfg.radii == ("0.25", "0.5")
  assert (cfg.n0, cfg.alpha, cfg.noise_batch_size) == (100, 0.001, 1000)


def test_every_problem_is_one_line():
  bad = {"kind": "cert", "n_iter": 0, "radii": ("1/255", "abc"), "seed": -1, "sigma": 0,
         "alpha": 1.5, "attack": "pgd", "autoattack": {"version": "x"}, "norm": "l1",
         "batch_size": 2.5, "colour": "red", "certify": {"sigma": 0.1}}
  with pytest.raises(UserError) as info:
    EvalConfig.from_config(bad, name="config.eval")
  assert str(info.value).splitlines() == [
      "config.eval.colour: unknown field (expected one of kind, radii, conf_radii, norm, "
      "n_iter, n_restarts, batch_size, seed, attack, autoattack, sigma, n0, n, alpha, "
      "noise_batch_size)",
      "config.eval.certify: unknown field; a certified evaluation is config.eval.kind="
      "'certified' with config.eval.sigma, n0, n, alpha, noise_batch_size and the L2 radii "
      "in config.eval.radii",
      "config.eval.kind: expected one of empirical, certified, got 'cert'",
      "config.eval.radii[1]: expected a positive number such as 0.5 or 1/255, got 'abc'",
      "config.eval.norm: expected one of linf, l2, got 'l1'",
      "config.eval.n_iter: expected an integer >= 1, got 0",
      "config.eval.batch_size: expected an integer >= 1, got 2.5",
      "config.eval.seed: expected an integer >= 0, got -1",
      "config.eval.attack: expected one of apgd-ce, autoattack, got 'pgd'",
      "config.eval.autoattack: version must be one of standard, rand, got 'x'",
      "config.eval.sigma: expected a finite number in (0.0, inf), got 0",
      "config.eval.alpha: expected a finite number in (0.0, 1.0), got 1.5"]


@pytest.mark.parametrize("values, message", [
    ({"kind": "certified", "conf_radii": ("0.1",)},
     "eval.conf_radii: APGDconf columns belong to kind 'empirical'; a certified evaluation has none"),
    ({"autoattack": {"attacks_to_run": ["pgd"]}},
     "eval.autoattack: unknown attack 'pgd', expected one of apgd-ce, apgd-t, fab-t, square, apgd-dlr"),
    ({"autoattack": {"n_queries": 0}}, "eval.autoattack.n_queries: expected an integer >= 1, got 0"),
    ({"autoattack": {"eps": 0.1}}, "eval.autoattack: unknown option 'eps' (expected version, "
     "attacks_to_run, n_iter, n_queries, n_target_classes, eot_iter)"),
    ({"radii": 0}, "eval.radii[0]: must be a positive finite number, got 0"),
    ({"radii": {"a": 1}}, "eval.radii: expected a list of radii such as ('1/255', '2/255'), got dict"),
    ({"n": True}, "eval.n: expected an integer >= 1, got True"),
])
def test_single_problems(values, message):
  with pytest.raises(UserError) as info:
    EvalConfig.from_config(values)
  assert str(info.value) == message


def test_not_a_mapping():
  with pytest.raises(UserError, match="^eval: expected a mapping of evaluation settings, got list$"):
    EvalConfig.from_config([("kind", "empirical")])
