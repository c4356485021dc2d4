"""jobs.sweep, cli/sweep.py and configs/mnist_era.py: planned runs as data, a real tiny run
through the train job in-process (and its resume), and the table and Pareto plots from
per-sample reports with hand-computed values."""
import json
import pathlib

import numpy as np
import pytest

from jax_abstain import files, reports
from jax_abstain.cli import sweep as sweep_cli
from jax_abstain.configs import mnist_era
from jax_abstain.errors import UserError
from jax_abstain.jobs import sweep


def test_config_trains_branches_at_twice_the_threat_radius():
  era = mnist_era.get_config("loss=era,beta=0.25,init=runs/x/trades/model")
  assert era.train.eps == "0.2" and tuple(era.eval.radii) == ("0.1", "0.2")
  assert era.train.beta == 0.25 and era.model.init_dir == "runs/x/trades/model"
  assert era.train.schedule == "constant" and era.data.train_limit == 0
  std = mnist_era.get_config("eps=1/255")
  assert tuple(std.eval.radii) == ("1/255", "2/255") and std.train.schedule == "trades"
  assert mnist_era.get_config("loss=trades,train_eps=0.3").train.eps == "0.3"
  assert mnist_era.get_config({"loss": "era", "beta": 0.5, "epochs": 3}).train.epochs == 3
  with pytest.raises(UserError, match="loss"):
    mnist_era.get_config("loss=pgd")


def test_planned_runs_chain_the_models():
  out = pathlib.Path("runs/s")
  runs = dict(sweep.planned_runs(out, [0.1, 1.0], trades_ft=True, trades_more=True))
  assert list(runs) == ["std", "trades", "trades_ft", "trades_more", "era_0.1", "era_1"]
  assert runs["std"] == {"loss": "std"}
  assert runs["trades"] == {"loss": "trades", "init": str(out / "std" / "model")}
  assert runs["trades_more"] == {"loss": "trades", "init": str(out / "trades" / "model")}
  assert runs["trades_ft"] == {"loss": "trades", "init": str(out / "trades" / "model"),
                               **sweep.TRADES_FT}
  assert runs["era_0.1"] == {"loss": "era", "beta": 0.1, "init": str(out / "trades" / "model")}
  longer = dict(sweep.planned_runs(out, [0.5], trades_epochs=8))
  assert longer["trades"] == {"loss": "trades", "init": str(out / "std" / "model"), "epochs": 8}
  staged = dict(sweep.planned_runs(out, [0.5], trades_epochs=8, trades_kl=6, trades_ft=True))
  assert list(staged) == ["std", "trades_warm", "trades", "trades_ft", "era_0.5"]
  assert staged["trades_warm"] == {"loss": "trades", "init": str(out / "std" / "model"),
                                   "epochs": 8}
  assert staged["trades"] == {"loss": "trades", "trades_beta": 6,
                              "init": str(out / "trades_warm" / "model"), "epochs": 8}
  assert staged["trades_ft"]["trades_beta"] == 6 and staged["era_0.5"]["beta"] == 0.5


@pytest.mark.slow
def test_tiny_run_through_the_train_job_and_resume(tmp_path, capsys):
  runs = [("std", {"loss": "std", "epochs": 1, "train_limit": 50})]
  extra = {"eval_limit": "10", "eval_batch": "10"}     # as cli/sweep.py passes --extra
  sweep.run_sweep(tmp_path, runs, eps="0.1", extra=extra)
  results = json.loads((tmp_path / "std" / "results.json").read_text())
  assert results["std"]["n"] == 10 and set(results["std"]["at"]) == {"0.1", "0.2"}
  recorded = json.loads((tmp_path / "std" / "config.json").read_text())
  assert recorded["data"]["eval_limit"] == 10 and recorded["train"]["epochs"] == 1
  cols = reports.read_report(tmp_path / "std" / "reports" / "std.csv")
  assert np.all(cols["is_rob@0.1"] >= cols["is_rob@0.2"])      # nested balls
  assert (tmp_path / "std" / "model" / "manifest.json").exists()
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["models"][0]["nat_acc"] == pytest.approx(100 * cols["is_acc"].mean())
  if not cols["is_rob@0.2"].any():   # nothing selected at 2 eps: Fig. 3 would be empty
    assert "[sweep] no figures: pareto: no points" in capsys.readouterr().out
  capsys.readouterr()
  sweep.run_sweep(tmp_path, runs, eps="0.1", extra=extra)      # resumes: nothing to do
  assert "std: done, skipped" in capsys.readouterr().out


def _write_run(out, run, name, is_acc, rob1, rob2):
  wd = out / run
  n = len(is_acc)
  files.write_json(wd / "results.json", {name: {"report": f"reports/{name}.csv"}})
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
  # Every run is done: no training, the reports are found through each run's results.json.
  assert sweep_cli.main(["--out", str(tmp_path), "--betas", "0.5", "--summary-only"]) == 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  models = {p["run"]: p for p in summary["models"]}
  assert models["std"]["nat_acc"] == 90.0 and models["std"]["rob_acc@eps"] == 40.0
  assert models["trades"]["rob_inacc@2eps"] == 10.0 and models["era_0.5"]["rob_inacc@2eps"] == 0.0
  assert models["trades"]["commit_prec@2eps"] == pytest.approx(500 / 6)
  assert models["era_0.5"]["rob_sel@2eps"] == 60.0
  comps = {c["branch"]: c for c in summary["compositions"]}
  # ERA answers samples 0-5 (accurate, robust at 0.1), std the rest (accurate on 6-8, robust on none).
  assert (comps["era_0.5"]["nat_acc"], comps["era_0.5"]["rob_acc"]) == (90.0, 60.0)
  # TRADES also answers sample 8, where it is robustly wrong: one accurate answer is lost.
  assert (comps["trades"]["nat_acc"], comps["trades"]["rob_acc"]) == (80.0, 50.0)
  assert comps["trades"]["commit_prec"] == pytest.approx(500 / 6, abs=0.005)
  # At 0.2 with selection at 0.2, std is robust only on samples 0-1, which ERA answers anyway.
  same = {c["branch"]: c for c in summary["same_radius"]}
  assert (same["era_0.5"]["nat_acc"], same["era_0.5"]["rob_acc"]) == (90.0, 60.0)
  table = (tmp_path / "summary.md").read_text()
  assert "| era_0.5 + std | 90.00 | 60.00 | 60.00 | 100.00 |" in table
  assert "| trades | 80.00 | 70.00 | 10.00 | 50.00 | 10.00 | 60.00 | 83.33 |" in table
  for png in ("fig2_rob_acc_vs_rob_inacc.png", "fig3_rob_sel_vs_rob_acc.png",
              "fig4_composition.png"):
    assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert json.loads((tmp_path / "summary.json").read_text())["select_at"] == "0.2"
  assert "era_0.5 + std" in capsys.readouterr().out


def test_summary_only_without_results_names_the_run(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    sweep_cli.main(["--out", str(tmp_path), "--summary-only"])
  assert e.value.code == 2
  assert f"error: run std: no results.json in {tmp_path / 'std'}" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--betas", "0"], "--betas"), (["--trades-kl", "-1"], "--trades-kl"),
    (["--eps", "-0.1"], "--eps"), (["--extra", "nope=1"], "unknown config argument 'nope'"),
    (["--config", "nope"], "no packaged config")])
def test_bad_sweep_arguments_fail_before_any_run(tmp_path, capsys, args, message):
  with pytest.raises(SystemExit) as e:
    sweep_cli.main(["--out", str(tmp_path / "sweep"), *args])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
  assert not (tmp_path / "sweep").exists()
