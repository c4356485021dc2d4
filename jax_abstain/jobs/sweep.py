"""The ERA beta sweep, in-process: std core, TRADES branch, ERA branches, compositions, plots.

    python -m jax_abstain.cli.sweep --out runs/mnist_era --trades-epochs 8
    runs = sweep.planned_runs(out, betas=[0.1, 0.5])      # [(run, config arguments)]
    summary = sweep.run_sweep(out, runs, eps="0.1")        # trains, composes, writes

Each run is one train job (`jobs.train.run`) of a config built as data
(``configs.build(config, arguments)``, default configs/mnist_era.py) and checked by
`jobs.schema.check`, in ``<out>/<run>``; a run whose workdir already holds ``results.json``
is skipped, so an interrupted sweep resumes where it stopped. The runs, in order:

  std         the accurate core (standard training)
  trades_warm with trades_kl: TRADES at 2 eps with KL weight 1, fine-tuned from std
  trades      TRADES at 2 eps, fine-tuned from std (or, with trades_kl K, from trades_warm with
              KL weight K): the robust branch the paper starts from
  trades_ft   with trades_ft: TRADES again with ERA's fine-tuning budget (same-budget baseline)
  trades_more with trades_more: one more TRADES epoch on all digits (a stronger branch)
  era_<beta>  ERA at 2 eps fine-tuned from trades, one per beta

Every branch (trades, trades_ft, era_*) is composed with the std core at eps, selected by its
robustness at 2 eps (paper eq. 12, section 5). Written to ``<out>``: ``summary.json``,
``summary.md`` (the table) and the paper's Pareto plots (`analysis.plots`):
``fig2_rob_acc_vs_rob_inacc.png`` (robust accuracy vs robust inaccuracy at 2 eps, Fig. 2),
``fig3_rob_sel_vs_rob_acc.png`` (robust selection vs the abstain model's robust accuracy,
Fig. 3) and ``fig4_composition.png`` (natural vs robust accuracy of the compositions, Fig. 4).
"""
import pathlib

import numpy as np

from jax_abstain import compose, configs, files, metrics, radii, reports
from jax_abstain.errors import UserError
from jax_abstain.jobs import inputs, schema, train, workdir as workdir_lib

# TRADES with the budget of one ERA fine-tuning (configs/mnist_era.py: era defaults).
TRADES_FT = {"epochs": 1, "lr": 0.01}


def planned_runs(out: pathlib.Path, betas, *, trades_ft: bool = False, trades_more: bool = False,
                 trades_epochs: int = 0, trades_kl: float = 0.0) -> list:
  """[(run name, config arguments dict)] in execution order; later runs start from earlier
  models (``init``: ``<out>/<run>/model``).

  With `trades_kl`, TRADES is trained in two stages: ``trades_warm`` with the config's KL weight
  (1), then ``trades`` with KL weight `trades_kl` from it (the same epochs each). Straight from
  the std model, KL weight 6 at 2 eps = 0.3 collapsed to constant predictions (10% accuracy).
  """
  out = pathlib.Path(out)
  epochs = {"epochs": trades_epochs} if trades_epochs else {}
  kl = {"trades_beta": trades_kl} if trades_kl else {}   # every TRADES run after the warm-up
  trades_init = out / "std" / "model"
  runs = [("std", {"loss": "std"})]
  if trades_kl:
    runs.append(("trades_warm", {"loss": "trades", "init": str(trades_init), **epochs}))
    trades_init = out / "trades_warm" / "model"
  runs.append(("trades", {"loss": "trades", **kl, "init": str(trades_init), **epochs}))
  branch = str(out / "trades" / "model")
  if trades_ft:
    runs.append(("trades_ft", {"loss": "trades", **kl, "init": branch, **TRADES_FT}))
  if trades_more:
    runs.append(("trades_more", {"loss": "trades", **kl, "init": branch}))
  runs += [(f"era_{b:g}", {"loss": "era", "beta": float(b), "init": branch}) for b in betas]
  return runs


def train_all(out: pathlib.Path, run_configs, *, train_missing: bool = True) -> dict:
  """Runs each (name, ConfigDict) as a train job in ``<out>/<name>`` unless it has results.

  Returns:
    {run name: path of its per-sample report}, from each run's results.

  Raises:
    UserError: a bad config (checked when its run starts, after the runs it starts from), or
      a run without results when `train_missing` is False.
  """
  found = {}
  for name, config in run_configs:
    workdir = pathlib.Path(out) / name
    if (workdir / "results.json").exists():
      print(f"[sweep] {name}: done, skipped", flush=True)
      results = files.read_json(workdir / "results.json")
    elif not train_missing:
      raise UserError(f"run {name}: no results.json in {workdir}; run the sweep to train it")
    else:
      print(f"[sweep] {name}: {config.train.loss} -> {workdir}", flush=True)
      job = schema.check(config)
      inputs.fetch(job)
      results = train.run(job, workdir_lib.prepare(workdir, job))
    found[name] = workdir / results[config.name]["report"]
  return found


def model_point(name: str, cols: dict, eps: str) -> dict:
  """Percentages of one model at eps and at 2 eps (robust selection and precision at 2 eps)."""
  double = radii.double_radius(eps)
  point = {"run": name, "nat_acc": metrics.natural_accuracy(cols["is_acc"])}
  for tag, r in (("eps", eps), ("2eps", double)):
    s = metrics.summary(cols["is_acc"], cols[f"is_rob@{r}"])
    point[f"rob_acc@{tag}"], point[f"rob_inacc@{tag}"] = s["rob_acc"], s["rob_inacc"]
  sel = cols[f"is_rob@{double}"]
  point["rob_sel@2eps"] = metrics.robust_selection(sel)
  point["commit_prec@2eps"] = metrics.commit_precision(cols["is_acc"], sel, sel)
  return {k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in point.items()}


def summarize(cols: dict, eps: str, core: str = "std") -> dict:
  """Model points and compositions (each branch with the core at eps) from the runs' reports
  ({run: report columns})."""
  double = radii.double_radius(eps)
  comps, same = [], []
  for n, b in cols.items():
    if n == core:
      continue
    t = cols[core]
    sound = compose.compose_reports([b, t], eps)
    sel = np.asarray(b[f"is_rob@{double}"], bool)
    at_double = compose.compose_indicators(
        [sel], [b["is_acc"], t["is_acc"]], [b[f"is_rob@{double}"], t[f"is_rob@{double}"]]
    ).summary()
    for c, rows in ((sound, comps), (at_double, same)):
      rows.append({"run": f"{n} + {core}", "branch": n, "nat_acc": c["nat_acc"],
                   "rob_acc": c["rob_acc"], "rob_sel": c["rob_sel"],
                   "commit_prec": c["commit_prec"]})
  # `compositions`: threat eps, selection at 2 eps (sound, paper section 5). `same_radius`:
  # threat and selection both at 2 eps, the default of the authors' eval/comp.py and the
  # semantics of the paper's Table 4; an adversary who can flip the selector is not covered.
  return {"eps": eps, "select_at": double, "core": core,
          "models": [model_point(n, c, eps) for n, c in cols.items()],
          "compositions": comps, "same_radius": same}


def write_outputs(out: pathlib.Path, summary: dict, cols: dict) -> str:
  """summary.json, summary.md (`analysis.markdown.sweep_tables`) and the Pareto figures of the
  runs' reports (`analysis.plots.pareto_figures`: the ERA runs form one series; none, with a
  printed note, when a figure would be empty); returns the markdown."""
  from jax_abstain.analysis import markdown, plots  # matplotlib only when figures are drawn
  out = pathlib.Path(out)
  text = markdown.sweep_tables(summary)
  files.write_json(out / "summary.json", summary)
  files.atomic_write(out / "summary.md", text)
  try:
    plots.pareto_figures(cols, summary["core"], summary["eps"], out,
                         series=lambda run: "era" if run.startswith("era_") else run)
  except UserError as e:   # e.g. no model selects anything: Fig. 3 has no point
    print(f"[sweep] no figures: {e}", flush=True)
  return text


def run_sweep(out, runs, *, eps: str, config: str = "mnist_era", extra=None,
        train_missing: bool = True) -> dict:
  """The sweep: builds every run's config (``configs.build(config, {**arguments, "eps": eps,
  **extra})``, so bad arguments fail before any training), trains the missing runs, composes,
  writes the outputs and prints the table.

  Returns:
    The summary (also ``<out>/summary.json``).
  """
  eps = radii.format_radius(eps)
  run_configs = [(name, configs.build(config, {**args, "eps": eps, **dict(extra or {})}))
                 for name, args in runs]
  found = train_all(out, run_configs, train_missing=train_missing)
  cols = {name: reports.read_report(path) for name, path in found.items()}
  summary = summarize(cols, eps)
  print(write_outputs(out, summary, cols))
  return summary
