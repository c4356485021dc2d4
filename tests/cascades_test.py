"""Cascade optimiser: equals brute force over compose_reports, respects the accuracy floor."""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from jax_abstain import cascades, compose, reports
from jax_abstain.errors import UserError

RADII = ("1/255", "2/255", "3/255")


def _random_report(rng, n, p_acc, p_rob):
  acc = rng.random(n) < p_acc
  rob = [rng.random(n) < p_rob]
  for _ in RADII[1:]:
    rob.append(rob[-1] & (rng.random(n) < 0.8))     # nested, as evaluate writes them
  return {"sample_idx": np.arange(n), "label": np.zeros(n, int), "is_acc": acc.astype(int),
          **{f"is_rob@{r}": b.astype(int) for r, b in zip(RADII, rob)}}


def _brute_force(abstain, core, eps="1/255"):
  """Every cascade through compose_reports; the best key (rob, nat, -len) overall and of length 1."""
  floor = compose.compose_reports([abstain[0], core], eps)   # only for its keys
  core_nat = round(100 * np.mean(core["is_acc"]), 2)
  best, best2 = None, None
  for m in range(1, len(abstain) + 1):
    for order in itertools.permutations(range(len(abstain)), m):
      for at in itertools.product(RADII[1:], repeat=m):
        r = compose.compose_reports([abstain[i] for i in order] + [core], eps, list(at))
        if r["nat_acc"] < core_nat:
          continue
        key = (r["rob_acc"], r["nat_acc"], -m)
        best = max(best or key, key)
        if m == 1:
          best2 = max(best2 or key, key)
  assert floor
  return best, best2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_optimiser_equals_brute_force(seed):
  rng = np.random.default_rng(seed)
  n = 60
  abstain = [_random_report(rng, n, 0.8, p) for p in (0.9, 0.7, 0.5)]
  core = _random_report(rng, n, 0.85, 0.3)
  result = cascades.optimise(abstain, core, "1/255", val_fraction=0)
  best, best2 = _brute_force(abstain, core)
  assert result["candidate_radii"] == {"A1": ["2/255", "3/255"], "A2": ["2/255", "3/255"],
                                       "A3": ["2/255", "3/255"]}
  if best is None:
    assert result["best"] is None
    return
  got = result["best"]
  assert (got["rob_acc"], got["nat_acc"], -len(got["order"])) == best
  got2 = result["best_2"]
  assert best2 is None and got2 is None or (got2["rob_acc"], got2["nat_acc"]) == best2[:2]
  if best2 is not None:
    assert result["gain_rob_acc"] == round(best[0] - best2[0], 2)
  assert result["search_space"] == cascades.search_space_size(3, 2) == 3 * 2 + 6 * 4 + 6 * 8
  assert result["evaluated"] <= result["search_space"]


def _hand_report(acc, rob_eps, rob_2eps):
  n = len(acc)
  return {"sample_idx": np.arange(n), "label": np.zeros(n, int), "is_acc": np.array(acc),
          "is_rob@0.1": np.array(rob_eps), "is_rob@0.2": np.array(rob_2eps)}


def test_cascade_beats_every_2_composition_and_keeps_the_floor():
  # Six samples; the core is accurate everywhere but robust nowhere. A robustly covers
  # samples 0-1, B samples 2-3; each alone gains 2 samples, the cascade 4. C selects
  # everything robustly and is right on 0-4 but wrong on 5: any cascade using C has the
  # most robust accuracy (5 of 6) but loses natural accuracy.
  a = _hand_report([1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0])
  b = _hand_report([1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0])
  c = _hand_report([1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1])
  core = _hand_report([1] * 6, [0] * 6, [0] * 6)
  result = cascades.optimise([a, b, c], core, "0.1", names=["a", "b", "c"], val_fraction=0)
  assert result["best"]["order"] in (["a", "b"], ["b", "a"])
  assert (result["best"]["nat_acc"], result["best"]["rob_acc"]) == (100.0, round(400 / 6, 2))
  assert result["best_2"]["rob_acc"] == round(200 / 6, 2)
  assert result["gain_rob_acc"] == round(round(400 / 6, 2) - round(200 / 6, 2), 2)
  relaxed = cascades.optimise([a, b, c], core, "0.1", names=["a", "b", "c"], min_nat_acc=60,
                              val_fraction=0)
  assert relaxed["best"]["order"] == ["c"] and relaxed["best"]["rob_acc"] == round(500 / 6, 2)


def test_bad_input():
  a = _hand_report([1, 1], [1, 0], [1, 0])
  core = _hand_report([1, 1], [0, 0], [0, 0])
  no_2eps = {k: v for k, v in a.items() if k != "is_rob@0.2"}
  with pytest.raises(UserError, match=r"A1: report has no is_rob@<r> column with r >= 0.2"):
    cascades.optimise([no_2eps], core, "0.1")
  with pytest.raises(UserError, match="different samples"):
    cascades.optimise([{**a, "sample_idx": np.array([1, 0])}], core, "0.1")
  with pytest.raises(UserError, match="is_rob@0.05"):
    cascades.optimise([a], core, "0.05", select_radii=["0.2"])


def test_cli_table_and_json(tmp_path, capsys):
  paths = []
  for name, cols in {"a": _hand_report([1, 1, 0], [1, 0, 1], [1, 0, 1]),
                     "core": _hand_report([1, 1, 1], [0, 1, 0], [0, 1, 0])}.items():
    reports.write_report(tmp_path / f"{name}.csv", cols)
    paths.append(str(tmp_path / f"{name}.csv"))
  out = tmp_path / "c.json"
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.cli.cascades", "--abstain", paths[0],
                         "--core", paths[1], "--eps", "0.1", "--json", str(out),
                         "--val-fraction", "0"],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  result = json.loads(out.read_text())
  assert result["best"] is None                       # a would cost natural accuracy
  table = proc.stdout.splitlines()
  assert table[0].startswith("cascades at eps=0.1 (nat_acc >= 100.00; ")
  assert table[1] == "in-sample: chosen and measured on the same 3 samples"
  assert table[3:] == ["|  | nat_acc | rob_acc | cascade |", "|---|---:|---:|---|",
                       "| core alone | 100.00 | 33.33 | core |",
                       "| best 2-comp. |  |  | none keeps nat_acc >= 100.00 |",
                       "| best cascade |  |  | none keeps nat_acc >= 100.00 |", "",
                       "robustness counted at eps=0.1: abstain models empirical, core empirical"]
  from jax_abstain.cli import cascades as cascades_cli
  with pytest.raises(SystemExit) as e:
    cascades_cli.main(["--abstain", paths[0], "--core", paths[1], "--eps", "0.4"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and len(err.strip().splitlines()) == 1
  assert "no is_rob@<r> column with r >= 0.8 (has: is_rob@0.1, is_rob@0.2)" in err


def test_core_needs_only_its_robustness_at_eps():
  # Issue 16, item 9: the core never selects, so a core evaluated at eps only is enough (the
  # winner's re-scoring through compose_reports used to ask it for is_rob@<2 eps>).
  a = _hand_report([1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0])
  core = {"sample_idx": np.arange(4), "label": np.zeros(4, int), "is_acc": np.ones(4, int),
          "is_rob@0.1": np.array([0, 0, 1, 0])}
  result = cascades.optimise([a], core, "0.1", names=["a"], val_fraction=0)
  # a selects sample 0 (robust at 0.2) and answers it robustly; the core is robust on 2.
  assert (result["best"]["nat_acc"], result["best"]["rob_acc"]) == (100.0, 50.0)
  assert result["core"] == {"nat_acc": 100.0, "rob_acc": 25.0, "robustness": "empirical"}
  assert result["best"]["robustness"] == ["empirical", "empirical"]
  # A certified core counts its certified robustness (radius >= eps, abstentions never).
  cert_core = {"sample_idx": np.arange(4), "label": np.zeros(4, int), "is_acc": np.ones(4, int),
               "cert_pred": np.array([0, 0, 0, -1]), "radius": np.array([0.05, 0.1, 0.3, 0.0])}
  result = cascades.optimise([a], cert_core, "0.1", names=["a"], val_fraction=0)
  assert result["core"] == {"nat_acc": 75.0, "rob_acc": 50.0, "robustness": "certified"}
  # 0 -> a (robust); 1 -> core (certified at 0.1); 2 -> core (certified); 3 -> core abstains.
  assert (result["best"]["nat_acc"], result["best"]["rob_acc"]) == (75.0, 75.0)
  assert result["best"]["robustness"] == ["empirical", "certified"]
  with pytest.raises(UserError, match=r"^a: a certified report \(cert_pred, radius\)"):
    cascades.optimise([cert_core], core, "0.1", names=["a"])
