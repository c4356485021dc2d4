"""The one markdown-table builder and the tables built on it (compositions, cascades, sweeps)."""
import numpy as np
import pytest

from jax_abstain import cascades, compose
from jax_abstain.analysis import markdown
from jax_abstain.errors import UserError


def test_table_formats_and_aligns():
  rows = [{"model": "era", "n": 100, "acc": 98.456, "tau": None, "note": "a|b"},
          {"model": "std", "n": 100, "acc": np.float64(100.0), "tau": 0.5}]
  assert markdown.table(rows, ["model", "n", ("acc", "accuracy [%]"), "tau", "note"]) == "\n".join([
      "| model | n | accuracy [%] | tau | note |",
      "|---|---:|---:|---:|---|",
      "| era | 100 | 98.46 |  | a\\|b |",
      "| std | 100 | 100.00 | 0.50 |  |"])
  assert markdown.table(rows[:1], ["acc"], digits=1).splitlines()[-1] == "| 98.5 |"
  with pytest.raises(UserError, match="at least one column"):
    markdown.table(rows, [])


S = np.array([1, 1, 0, 0])


def _cols(acc, rob, rob2):
  return {"sample_idx": np.arange(4), "label": np.zeros(4, int), "is_acc": np.array(acc),
          "is_rob@0.1": np.array(rob), "is_rob@0.2": np.array(rob2)}


def test_composition_table_of_one_result_and_of_a_grid():
  branch, core = _cols([1, 1, 0, 1], [1, 1, 1, 0], [1, 0, 1, 0]), _cols([1, 1, 1, 0], [0] * 4, [0] * 4)
  result = compose.compose_reports([branch, core], "0.1")
  # Branch selected on 0 and 2 (robust at 0.2); it is accurate on 0 only; the core answers
  # 1 (accurate) and 3 (wrong), never robustly.
  assert markdown.composition_table(result).splitlines() == [
      "composition at eps=0.1 (robustness selectors at 0.2)", "",
      "| nat_acc | rob_acc | rob_sel | commit_prec |", "|---:|---:|---:|---:|",
      "| 50.00 | 25.00 | 50.00 | 50.00 |", "",
      "robustness counted at eps=0.1: model 1 empirical, core empirical"]


def test_cascade_table_names_the_chain_and_the_gain():
  a = _cols([1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0])
  b = _cols([1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 1, 0])
  core = _cols([1, 1, 1, 1], [0] * 4, [0] * 4)
  result = cascades.optimise([a, b], core, "0.1", names=["a", "b"], val_fraction=0)
  lines = markdown.cascade_table(result).splitlines()
  assert lines[1] == "in-sample: chosen and measured on the same 4 samples"
  assert lines[3:6] == ["|  | nat_acc | rob_acc | cascade |", "|---|---:|---:|---|",
                        "| core alone | 100.00 | 0.00 | core |"]
  assert lines[6] == "| best 2-comp. | 100.00 | 50.00 | a@0.2 -> core |"
  assert lines[7] == "| best cascade | 100.00 | 75.00 | a@0.2 -> b@0.2 -> core |"
  assert lines[-1] == "gain over the best 2-composition: +25.00 points robust accuracy"


def test_sweep_tables_rows():
  summary = {"eps": "0.1", "select_at": "0.2", "core": "std",
             "models": [{"run": "trades", "nat_acc": 80.0, "rob_acc@eps": 70.0,
                         "rob_inacc@eps": 10.0, "rob_acc@2eps": 50.0, "rob_inacc@2eps": 10.0,
                         "rob_sel@2eps": 60.0, "commit_prec@2eps": 250 / 3}],
             "compositions": [{"run": "era_0.5 + std", "nat_acc": 90.0, "rob_acc": 60.0,
                               "rob_sel": 60.0, "commit_prec": 100.0}], "same_radius": []}
  text = markdown.sweep_tables(summary)
  assert "| trades | 80.00 | 70.00 | 10.00 | 50.00 | 10.00 | 60.00 | 83.33 |" in text
  assert "| era_0.5 + std | 90.00 | 60.00 | 60.00 | 100.00 |" in text
  assert "| composition (selected at 0.2, core std) | nat_acc | rob_acc @0.1 |" in text
