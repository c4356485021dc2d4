"""Split tables (Tables 7-8) and the rows of Fig. 2-4 on hand-made reports."""
import numpy as np
import pytest

from jax_abstain import compose
from jax_abstain.analysis import tables
from jax_abstain.errors import UserError

N = 8
ACC = np.array([1, 1, 0, 0, 1, 0, 1, 1])
ROB1 = np.array([1, 0, 1, 0, 1, 0, 0, 1])
ROB2 = np.array([1, 0, 0, 0, 1, 0, 0, 0])


def _report(acc, rob1, rob2, adv_conf=None):
  cols = {"sample_idx": np.arange(N), "label": np.zeros(N, int), "pred": 1 - acc, "is_acc": acc,
          "conf": np.full(N, 0.9), "is_rob@1/255": rob1, "is_rob@2/255": rob2}
  if adv_conf is not None:
    cols["adv_conf@2/255"] = adv_conf
  return cols


def test_split_rows_are_the_four_splits_per_radius():
  rows = tables.split_rows({"m": _report(ACC, ROB1, ROB2)})
  assert [r["eps"] for r in rows] == ["1/255", "2/255"]
  # At 1/255: r&a = {0, 4, 7}, r&~a = {2}, ~r&a = {1, 6}, ~r&~a = {3, 5}.
  assert rows[0] == {"model": "m", "eps": "1/255", "n": 8, "nat_acc": 62.5, "nonrob_inacc": 25.0,
                     "rob_inacc": 12.5, "nonrob_acc": 25.0, "rob_acc": 37.5}
  assert rows[1]["rob_acc"] == 25.0 and rows[1]["nonrob_acc"] == 37.5 and rows[1]["rob_inacc"] == 0.0
  md = tables.splits_markdown(rows)
  assert "| 1/255 | r ∧ a | 37.50 |" in md and "| 2/255 | ¬r ∧ a | 37.50 |" in md
  assert tables.to_csv(rows).splitlines()[0] == "model,eps,n,nat_acc,nonrob_inacc,rob_inacc,nonrob_acc,rob_acc"


def test_split_rows_of_certified_reports_need_radii():
  cert = {"sample_idx": np.arange(3), "label": np.array([0, 1, 1]), "is_acc": np.ones(3, int),
          "cert_pred": np.array([0, 2, -1]), "radius": np.array([0.5, 0.4, 0.0])}
  row = tables.split_rows({"c": cert}, radii_=[0.25])[0]
  assert row["rob_acc"] == pytest.approx(33.33) and row["rob_inacc"] == pytest.approx(33.33)
  assert row["nonrob_inacc"] == pytest.approx(33.33)
  with pytest.raises(UserError, match="no is_rob"):
    tables.split_rows({"c": cert})


def test_abstain_rows_robustness_and_softmax():
  conf = np.array([0.9, 0.2, 0.95, 0.1, 0.8, 0.3, 0.6, 0.99])
  rows = tables.abstain_rows({"m": _report(ACC, ROB1, ROB2, conf)}, "1/255", taus=[0.5, 0.9])
  ri, sr5, sr9 = rows
  # RI at 2/255 selects {0, 4}: both accurate and robust at 1/255.
  assert (ri["selector"], ri["rob_sel"], ri["commit_prec"]) == ("robustness", 25.0, 100.0)
  # SR tau 0.5 selects {0, 2, 4, 6, 7}: accurate & robust at eps are {0, 4, 7}.
  assert (sr5["rob_sel"], sr5["commit_prec"]) == (62.5, 60.0)
  assert (sr9["tau"], sr9["rob_sel"], sr9["commit_prec"]) == (0.9, 37.5, round(200 / 3, 2))


def test_composition_rows_match_compose_reports():
  branch, core = _report(ACC, ROB1, ROB2), _report(1 - ACC, ROB2, ROB2)
  rows = tables.composition_rows({"b": branch, "c": core}, "c", "1/255")
  assert rows[0]["selector"] == "none" and rows[0]["nat_acc"] == 37.5
  direct = compose.compose_reports([branch, core], "1/255")
  assert {k: rows[1][k] for k in ("nat_acc", "rob_acc", "rob_sel")} == \
         {k: direct[k] for k in ("nat_acc", "rob_acc", "rob_sel")}
  with pytest.raises(UserError, match="--core"):
    tables.composition_rows({"b": branch}, "c", "1/255")


def test_compositions_ask_the_core_only_for_eps_and_count_only_certified_robustness(tmp_path):
  # Issue 16, item 9. A core evaluated at the threat radius only (no is_rob@2/255): the
  # composition rows, the report job (its tables and figures) need nothing more of it.
  core = {k: v for k, v in _report(1 - ACC, ROB2, ROB2).items() if k != "is_rob@2/255"}
  branch = _report(ACC, ROB1, ROB2)
  rows = tables.composition_rows({"b": branch, "c": core}, "c", "1/255")
  # Branch selects {0, 4} (robust at 2/255), accurate and robust at 1/255 on both; the core
  # (accuracy 1 - ACC) answers the other 6 and is accurate on {2, 3, 5}, robust on none.
  assert (rows[1]["nat_acc"], rows[1]["rob_acc"]) == (62.5, 25.0)
  assert rows[1]["robustness"] == "branch empirical, core empirical"
  assert list(tables.selecting_models({"b": branch, "c": core}, "c", "2/255")) == ["b"]
  from jax_abstain import reports
  from jax_abstain.jobs import report
  for name, cols in (("b", branch), ("c", core)):
    reports.write_report(tmp_path / f"{name}.csv", cols)
  out = report.run([str(tmp_path / "b.csv"), str(tmp_path / "c.csv")], tmp_path / "out",
                   eps="1/255", core="c")
  assert [(r["model"], r["eps"]) for r in out["models"]] == [
      ("b", "1/255"), ("c", "1/255"), ("b", "2/255")]
  assert [r["model"] for r in out["abstain"]] == ["b"]
  # The 4-sample certified example through the composition rows: 50.00, not 75.00.
  label = np.array([0, 1, 1, 0])
  cert = {"sample_idx": np.arange(4), "label": label, "pred": np.zeros(4, int),
          "is_acc": np.ones(4, int), "conf": np.ones(4), "cert_pred": np.array([0, 1, -1, 1]),
          "radius": np.array([0.5, 0.3, 0.0, 0.6])}
  emp_core = {"sample_idx": np.arange(4), "label": label, "pred": label, "is_acc": np.ones(4, int),
              "conf": np.ones(4), "is_rob@0.25": np.ones(4, int), "is_rob@0.5": np.ones(4, int)}
  rows = tables.composition_rows({"cert": cert, "core": emp_core}, "core", 0.25)
  assert (rows[1]["nat_acc"], rows[1]["rob_acc"]) == (75.0, 50.0)
  assert rows[1]["robustness"] == "branch certified, core none"
