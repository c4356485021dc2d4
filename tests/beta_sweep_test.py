"""launch/beta_sweep.py and configs/mnist_era.py: planned runs, a real tiny run through the
main job, and the table and Pareto plots from per-sample reports with hand-computed values."""
import json
import pathlib

import numpy as np
import pytest

from jax_abstain.configs import mnist_era
from jax_abstain import files, reports
from jax_abstain.errors import UserError
from jax_abstain.jobs import sweep as beta_sweep


def test_config_trains_branches_at_twice_the_threat_radius():
  era = mnist_era.get_config("loss=era,beta=0.25,init=runs/x/trades/model")
  assert era.train.eps == "0.2" and tuple(era.eval.radii) == ("0.1", "0.2")
  assert era.train.beta == 0.25 and era.model.init_dir == "runs/x/trades/model"
  assert era.train.schedule == "constant" and era.data.train_limit == 0
  std = mnist_era.get_config("eps=1/255")
  assert tuple(std.eval.radii) == ("1/255", "2/255") and std.train.schedule == "trades"
  assert mnist_era.get_config("loss=trades,train_eps=0.3").train.eps == "0.3"
  with pytest.raises(UserError, match="loss"):
    mnist_era.get_config("loss=pgd")


def test_planned_runs_chain_the_models():
  out = pathlib.Path("runs/s")
  runs = dict(beta_sweep.planned_runs(out, [0.1, 1.0], "eval_limit=20", trades_ft=True,
                                      trades_more=True))
  assert list(runs) == ["std", "trades", "trades_ft", "trades_more", "era_0.1", "era_1"]
  assert runs["trades_more"] == f"loss=trades,init={out / 'trades' / 'model'},eval_limit=20"
  assert runs["trades"] == f"loss=trades,init={out / 'std' / 'model'},eval_limit=20"
  assert runs["era_0.1"].startswith(f"loss=era,beta=0.1,init={out / 'trades' / 'model'}")
  longer = dict(beta_sweep.planned_runs(out, [0.5], trades_epochs=8))
  assert longer["trades"] == f"loss=trades,init={out / 'std' / 'model'},epochs=8"
  staged = dict(beta_sweep.planned_runs(out, [0.5], trades_epochs=8, trades_kl=6, trades_ft=True))
  assert list(staged) == ["std", "trades_warm", "trades", "trades_ft", "era_0.5"]
  assert staged["trades_ft"] == (f"loss=trades,trades_beta=6,init={out / 'trades' / 'model'},"
                                 f"{beta_sweep.TRADES_FT_ARGS}")
  assert staged["trades_warm"] == f"loss=trades,init={out / 'std' / 'model'},epochs=8"
  assert staged["trades"] == (f"loss=trades,trades_beta=6,init={out / 'trades_warm' / 'model'},"
                              "epochs=8")
  assert staged["era_0.5"].startswith(f"loss=era,beta=0.5,init={out / 'trades' / 'model'}")


@pytest.mark.slow
def test_tiny_run_through_the_main_job_and_resume(tmp_path, capsys):
  runs = [("std", "loss=std,epochs=1,train_limit=50,eval_limit=10,eval_batch=10")]
  beta_sweep.run_all(tmp_path, beta_sweep.DEFAULT_CONFIG, runs, "0.1")
  results = json.loads((tmp_path / "std" / "results.json").read_text())
  assert results["std"]["n"] == 10 and set(results["std"]["at"]) == {"0.1", "0.2"}
  cols = reports.read_report(tmp_path / "std" / "reports" / "std.csv")
  assert np.all(cols["is_rob@0.1"] >= cols["is_rob@0.2"])      # nested balls
  assert (tmp_path / "std" / "model" / "manifest.json").exists()
  capsys.readouterr()
  beta_sweep.run_all(tmp_path, beta_sweep.DEFAULT_CONFIG, runs, "0.1")   # resumes: nothing to do
  assert "std: done, skipped" in capsys.readouterr().out


def _write_run(out, run, name, is_acc, rob1, rob2):
  wd = out / run
  n = len(is_acc)
  files.write_json(wd / "config.json", {"name": name})
  files.write_json(wd / "results.json", {})
  reports.write_report(wd / "reports" / f"{name}.csv", {
      "sample_idx": np.arange(n), "label": np.zeros(n, int), "pred": 1 - np.asarray(is_acc),
      "is_acc": np.asarray(is_acc), "conf": np.full(n, 0.9), "is_rob@0.1": np.asarray(rob1),
      "is_rob@0.2": np.asarray(rob2)})


def test_summary_table_and_plots_from_reports(tmp_path, capsys):
  #        sample:   0  1  2  3  4  5  6  7  8  9
  _write_run(tmp_path, "std", "std",
             [1, 1, 1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
             [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
  _write_run(tmp_path, "trades", "trades",
             [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0, 1, 0],
             [1, 1, 1, 1, 1, 0, 0, 0, 1, 0])
  _write_run(tmp_path, "era_0.5", "era",
             [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
  summary = beta_sweep.main(["--out", str(tmp_path), "--betas", "0.5"])   # all done: no training
  models = {p["run"]: p for p in summary["models"]}
  assert models["std"]["nat_acc"] == 90.0 and models["std"]["rob_acc@eps"] == 40.0
  assert models["trades"]["rob_inacc@2eps"] == 10.0 and models["era_0.5"]["rob_inacc@2eps"] == 0.0
  assert models["trades"]["commit_prec@2eps"] == 83.33 and models["era_0.5"]["rob_sel@2eps"] == 60.0
  comps = {c["branch"]: c for c in summary["compositions"]}
  # ERA answers samples 0-5 (accurate, robust at 0.1), std the rest (accurate on 6-8, robust on none).
  assert (comps["era_0.5"]["nat_acc"], comps["era_0.5"]["rob_acc"]) == (90.0, 60.0)
  # TRADES also answers sample 8, where it is robustly wrong: one accurate answer is lost.
  assert (comps["trades"]["nat_acc"], comps["trades"]["rob_acc"]) == (80.0, 50.0)
  assert comps["trades"]["commit_prec"] == 83.33
  # At 0.2 with selection at 0.2, std is robust only on samples 0-1, which ERA answers anyway.
  same = {c["branch"]: c for c in summary["same_radius"]}
  assert (same["era_0.5"]["nat_acc"], same["era_0.5"]["rob_acc"]) == (90.0, 60.0)
  table = (tmp_path / "summary.md").read_text()
  assert "| era_0.5 + std | 90.00 | 60.00 | 60.00 | 100.00 |" in table
  assert "| trades | 80.00 | 70.00 | 10.00 | 50.00 | 10.00 | 60.00 | 83.33 |" in table
  for png in ("fig2_rob_acc_vs_rob_inacc.png", "fig3_selection.png", "fig4_composition.png"):
    assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert json.loads((tmp_path / "summary.json").read_text())["select_at"] == "0.2"
  assert "era_0.5 + std" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--betas", "0"], "--betas"), (["--trades-kl", "-1"], "--trades-kl"),
    (["--eps", "-0.1"], "--eps")])
def test_bad_sweep_arguments_fail_before_any_run(tmp_path, args, message):
  with pytest.raises(UserError, match=message):
    beta_sweep.main(["--out", str(tmp_path / "sweep"), *args])
  assert not (tmp_path / "sweep").exists()
