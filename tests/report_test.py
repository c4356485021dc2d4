"""The report job (`jobs.report.run`) and its command line (`cli.report`): one command writes the
split table, Fig. 2-4 and the cascade search for reports made by a tiny training run."""
import csv
import json

import jax
import ml_collections
import numpy as np
import pytest

from jax_abstain import compose, data, metrics, models, reports
from jax_abstain.analysis import plots
from jax_abstain.cli import common as cli
from jax_abstain.cli import report as report_cli
from jax_abstain.evaluation import empirical as evaluate
from jax_abstain import training
from jax_abstain.jobs import report


@pytest.fixture(scope="module")
def trained_reports(tmp_path_factory):
  wd = tmp_path_factory.mktemp("tiny_run")
  x, y = data.load("synthetic", "train")
  x_eval, y_eval = data.load("synthetic", "test")
  x_eval, y_eval = x_eval[::10], y_eval[::10]                     # 100 points
  cfg = dict(loss="std", beta=1.0, trades_beta=6.0, eps="0.1", norm="linf", variant="paper",
             epochs=1, batch_size=10, lr=0.03, momentum=0.9, weight_decay=1e-4, schedule="constant",
             attack_steps=2, attack_rel_step=0.25, bn_mode_attack="", bn_mode_loss="")
  paths = []
  for name, seed, lr in [("std", 0, 0.03), ("weak", 1, 0.005)]:
    model = models.create("mlp", num_classes=3, seed=seed)
    training.fit(model, x[::4], y[::4], ml_collections.ConfigDict({**cfg, "lr": lr}), workdir=wd,
                 name=name, progress=False)
    model.eval()
    path = wd / "reports" / f"{name}.csv"
    evaluate.evaluate_model(model, x_eval, y_eval, radii=["0.1", "0.2"], conf_radii=["0.2"],
                            key=jax.random.key(0), n_iter=5, batch_size=100, progress=False,
                            report_path=path)
    paths.append(str(path))
  return paths


@pytest.mark.slow
def test_one_command_writes_tables_and_figures(trained_reports, tmp_path, capsys):
  report_paths = trained_reports
  out = tmp_path / "report"
  assert report_cli.main(["--reports", *report_paths, "--core", "std", "--eps", "0.1",
                          "--out", str(out), "--tau-grid", "0.5", "0.9"]) == 0
  printed = capsys.readouterr().out
  assert sorted(p.name for p in out.iterdir()) == sorted(
      ["splits.md", "splits.csv", "models.csv", "abstain.csv", "compositions.csv",
       "cascade.json", "report.md", *plots.FIGURES.values()])
  assert printed == (out / "report.md").read_text()
  named = {n: reports.read_report(p) for n, p in zip(("std", "weak"), report_paths)}
  rows = list(csv.DictReader((out / "splits.csv").open()))
  assert [(r["model"], r["eps"]) for r in rows] == [("std", "0.1"), ("std", "0.2"), ("weak", "0.1"),
                                                    ("weak", "0.2")]
  for r in rows:
    cols = named[r["model"]]
    expect = metrics.four_splits(cols["is_acc"], cols[f"is_rob@{r['eps']}"])
    for k, v in expect.items():
      assert float(r[k]) == round(v, 2)
  comps = list(csv.DictReader((out / "compositions.csv").open()))
  ri = next(r for r in comps if r["selector"] == "robustness")
  direct = compose.compose_reports([named["weak"], named["std"]], "0.1")
  assert (float(ri["nat_acc"]), float(ri["rob_acc"])) == (direct["nat_acc"], direct["rob_acc"])
  assert sum(r["selector"] == "softmax" for r in comps) == 2            # the two taus
  cascade = json.loads((out / "cascade.json").read_text())
  assert cascade["candidate_radii"] == {"weak": ["0.2"]}
  assert "| 0.1 | r ∧ a |" in printed and "## Cascade search" in printed
  models_csv = list(csv.DictReader((out / "models.csv").open()))
  assert [(r["model"], r["eps"]) for r in models_csv] == [("std", "0.1"), ("weak", "0.1"),
                                                          ("std", "0.2"), ("weak", "0.2")]
  for r in models_csv:
    cols = named[r["model"]]
    assert float(r["rob_inacc"]) == round(
        metrics.robust_inaccuracy(cols["is_acc"], cols[f"is_rob@{r['eps']}"]), 2)


@pytest.fixture
def report_paths(tmp_path):
  """Two hand-made reports of 100 samples (std and weak)."""
  rng = np.random.default_rng(0)
  paths = []
  for name in ("std", "weak"):
    acc = rng.random(100) < 0.9
    rob = acc & (rng.random(100) < 0.8)
    cols = {"sample_idx": np.arange(100), "label": np.zeros(100, int), "pred": 1 - acc, "is_acc": acc,
            "conf": np.full(100, 0.9), "is_rob@0.1": rob, "is_rob@0.2": rob & (rng.random(100) < 0.5)}
    reports.write_report(tmp_path / f"{name}.csv", cols)
    paths.append(str(tmp_path / f"{name}.csv"))
  return paths


@pytest.mark.parametrize("args,message", [
    (["--names", "a"], "--names: expected 2 names"),
    (["--names", "a", "a"], "must be distinct"),
    (["--core", "nope", "--eps", "0.1"], "--core: 'nope' is not one of the reports"),
    (["--eps", "0.3"], "no column is_rob@0.3"),
    (["--eps", "0.1", "--fig2-radius", "0.3"], "no column is_rob@0.3"),
    (["--eps", "0.1", "--fig2-radius", "-1"], "--fig2-radius: "),
])
def test_bad_input_is_one_line_and_exit_2(report_paths, tmp_path, capsys, args, message):
  with pytest.raises(SystemExit) as e:
    report_cli.main(["--reports", *report_paths, "--out", str(tmp_path / "o"), *args])
  err = capsys.readouterr().err
  assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
  assert not (tmp_path / "o").exists()                     # nothing half-written


def test_reports_of_different_lengths_are_refused(report_paths, tmp_path, capsys):
  cols = reports.read_report(report_paths[1])
  short = tmp_path / "short.csv"
  reports.write_report(short, {k: v[:50] for k, v in cols.items()})
  with pytest.raises(SystemExit):
    report_cli.main(["--reports", report_paths[0], str(short), "--core", "std",
                     "--out", str(tmp_path / "o")])
  assert "report short has 50 samples, report std has 100" in capsys.readouterr().err
  assert np.all(cols["sample_idx"] == np.arange(100))


def test_run_writes_tables_figures_and_returns_rows(report_paths, tmp_path):
  out = tmp_path / "r"
  result = report.run(report_paths, out, core="std", taus=[0.5], title="hand-made")
  assert (result["eps"], result["radius"]) == ("0.1", "0.2")      # smallest shared, 2 eps
  named = {n: reports.read_report(p) for n, p in zip(("std", "weak"), report_paths)}
  fig2_weak = next(r for r in result["models"] if (r["model"], r["eps"]) == ("weak", "0.2"))
  assert fig2_weak["rob_acc"] == round(
      metrics.robust_accuracy(named["weak"]["is_acc"], named["weak"]["is_rob@0.2"]), 2)
  assert set(result["figures"]) == {"fig2", "fig3", "fig4"}
  for path in result["figures"].values():
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert (out / "report.md").read_text() == result["markdown"]
  assert "| weak | 0.2 |" in result["markdown"] and "## Cascade search" in result["markdown"]
  without_core = report.run(report_paths, tmp_path / "n", eps="0.1")
  assert without_core["compositions"] is None and without_core["cascade"] is None
  assert sorted(p.name for p in (tmp_path / "n").glob("*.png")) == [
      plots.FIGURES["fig2"], plots.FIGURES["fig3"]]
