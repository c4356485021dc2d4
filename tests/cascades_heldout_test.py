"""Cascades chosen on a selection set and measured on held-out samples (issue 17, item 4)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from jax_abstain import cascades, reports
from jax_abstain.errors import UserError
from jax_abstain.jobs import report as report_job


def _report(acc, rob):
  """A report whose robustness at eps (0.1) and at the selection radius (0.2) are `rob`."""
  n = len(acc)
  return {"sample_idx": np.arange(n), "label": np.zeros(n, int), "is_acc": np.array(acc, int),
          "is_rob@0.1": np.array(rob, int), "is_rob@0.2": np.array(rob, int)}


def _overfitting_reports():
  """Eight samples split 4/4 by `split_samples(0.5, seed 0)`. The core is accurate everywhere and
  robust nowhere. a is robust on selection samples s0, s1 and on held-out h0; b on s2, s3 and on
  the same h0. On the selection set a -> b looks perfect (4/4) against 2/4 for the best
  2-composition (+50 points); on the held-out set both cover only h0 (1/4 each, +0 points)."""
  sel = np.flatnonzero(cascades.split_samples(np.arange(8), 0.5, seed=0))
  held = np.setdiff1d(np.arange(8), sel)
  rob_a, rob_b = np.zeros(8, int), np.zeros(8, int)
  rob_a[[sel[0], sel[1], held[0]]] = 1
  rob_b[[sel[2], sel[3], held[0]]] = 1
  ones = [1] * 8
  return _report(ones, rob_a), _report(ones, rob_b), _report(ones, [0] * 8)


def test_split_is_seeded_exact_and_depends_only_on_the_sample_set():
  idx = np.arange(100, 110)
  mask = cascades.split_samples(idx, 0.3, seed=4)
  assert mask.sum() == 3
  np.testing.assert_array_equal(mask, cascades.split_samples(idx, 0.3, seed=4))
  assert not np.array_equal(mask, cascades.split_samples(idx, 0.3, seed=5))
  # Rows in another order: the same samples are selected.
  shuffled = idx[::-1]
  assert set(shuffled[cascades.split_samples(shuffled, 0.3, seed=4)]) == set(idx[mask])
  for bad in (0.0, 1.0, -0.5, 0.01):             # 0.01 of 10 samples leaves the selection empty
    with pytest.raises(UserError, match="^val_fraction: must leave both"):
      cascades.split_samples(idx, bad)


def test_held_out_numbers_expose_the_in_sample_overfit():
  a, b, core = _overfitting_reports()
  result = cascades.optimise([a, b], core, "0.1", names=["a", "b"])
  assert result["split"] == {"val_fraction": 0.5, "seed": 0, "selection_samples": 4,
                             "held_out_samples": 4}
  sel = result["selection"]
  assert sel["samples"] == 4 and result["samples"] == 4
  assert sel["best"]["order"] == ["a", "b"] == result["best"]["order"]
  assert (sel["best"]["rob_acc"], sel["best_2"]["rob_acc"], sel["gain_rob_acc"]) == (
      100.0, 50.0, 50.0)
  assert sel["best_2"]["order"] == ["a"]                 # a and b tie; the first one found stays
  # Measured on the held-out samples the same choices cover only h0.
  assert (result["best"]["rob_acc"], result["best_2"]["rob_acc"], result["gain_rob_acc"]) == (
      25.0, 25.0, 0.0)
  assert result["core"] == {"nat_acc": 100.0, "rob_acc": 0.0, "robustness": "empirical"}
  # In-sample (the former behaviour) reports the inflated gain: 5/8 against 3/8.
  in_sample = cascades.optimise([a, b], core, "0.1", names=["a", "b"], val_fraction=0)
  assert (in_sample["best"]["rob_acc"], in_sample["best_2"]["rob_acc"],
          in_sample["gain_rob_acc"]) == (62.5, 37.5, 25.0)
  assert in_sample["split"]["held_out_samples"] == 0 and in_sample["selection"]["samples"] == 8


def test_cli_and_report_job_say_which_numbers_are_which(tmp_path):
  a, b, core = _overfitting_reports()
  paths = []
  for name, cols in {"a": a, "b": b, "core": core}.items():
    reports.write_report(tmp_path / f"{name}.csv", cols)
    paths.append(str(tmp_path / f"{name}.csv"))
  out = tmp_path / "c.json"
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.cli.cascades", "--abstain", *paths[:2],
                         "--core", paths[2], "--eps", "0.1", "--json", str(out)],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[1] == ("chosen on a selection set of 4 samples (val_fraction 0.5, seed 0), "
                      "measured on the 4 held-out samples")
  assert lines[3:8] == [
      "|  | sel. nat_acc | sel. rob_acc | held-out nat_acc | held-out rob_acc | cascade |",
      "|---|---:|---:|---:|---:|---|",
      "| core alone | 100.00 | 0.00 | 100.00 | 0.00 | core |",
      "| best 2-comp. | 100.00 | 50.00 | 100.00 | 25.00 | a@0.2 -> core |",
      "| best cascade | 100.00 | 100.00 | 100.00 | 25.00 | a@0.2 -> b@0.2 -> core |"]
  assert lines[-1] == ("gain over the best 2-composition: +0.00 points robust accuracy on the "
                       "held-out samples (+50.00 on the selection set)")
  saved = json.loads(out.read_text())
  assert saved["selection"]["gain_rob_acc"] == 50.0 and saved["gain_rob_acc"] == 0.0
  bad = subprocess.run([sys.executable, "-m", "jax_abstain.cli.cascades", "--abstain", paths[0],
                        "--core", paths[2], "--eps", "0.1", "--val-fraction", "1"],
                       capture_output=True, text=True)
  assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
  assert "--val-fraction: expected a finite number in [0.0, 1.0)" in bad.stderr
  result = report_job.run(paths, tmp_path / "report", eps="0.1", core="core")
  assert result["cascade"]["gain_rob_acc"] == 0.0
  assert "## Cascade search (chosen on a selection set, measured held out)" in result["markdown"]
  assert "| best cascade | 100.00 | 100.00 | 100.00 | 25.00 |" in result["markdown"]
  in_sample = report_job.run(paths, tmp_path / "report0", eps="0.1", core="core",
                             cascade_val_fraction=0)
  assert in_sample["cascade"]["gain_rob_acc"] == 25.0
