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
  mma         with mma: MMA (Ding et al.) fine-tuned from trades with the authors' MNIST
              hinge d_max 0.45 (> 2 eps, as they advise)
  ibp         with ace: Gowal et al.'s small CNN trained from scratch with IBP at train_eps
              0.2 (`training.objectives.ibp`)
  ace_ibp     with ace: the selection network of ACE (Mueller et al. 2020; paper eq. 15): a
              2-class small CNN trained with IBP to predict where ibp is certified and
              accurate at eps (`train_selection_network`); its report is ibp's with the
              columns sn_cert@eps, sn_adv@eps (`evaluation.selection`); ibp itself is shown
              through it (its robustness-indicator point is ibp's)

Every branch (trades, trades_ft, era_*) is composed with the std core at eps, selected by its
robustness at 2 eps (paper eq. 12, section 5). Written to ``<out>``: ``summary.json``,
``summary.md`` (the table) and the paper's Pareto plots (`analysis.plots`):
``fig2_rob_acc_vs_rob_inacc.png`` (robust accuracy vs robust inaccuracy at 2 eps, Fig. 2),
``fig3_rob_sel_vs_rob_acc.png`` (robust selection vs the abstain model's robust accuracy,
Fig. 3) and ``fig4_composition.png`` (natural vs robust accuracy of the compositions, Fig. 4).
"""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jax_abstain import compose, configs, data, files, metrics, models, radii, reports
from jax_abstain.configs import mnist_era
from jax_abstain.errors import UserError
from jax_abstain.jobs import inputs, schema, train, workdir as workdir_lib

# TRADES with the budget of one ERA fine-tuning (configs/mnist_era.py: era defaults).
TRADES_FT = {"epochs": 1, "lr": 0.01}
# MMA's hinge d_max on MNIST Linf (BorealisAI/mma_training run_mnist_training.sh, MMA-0.45);
# the training radius of the IBP classifier and selection network (Gowal et al. train above the
# test radius: 0.2 for the sweep's threat radius 0.15).
MMA_D_MAX, IBP_TRAIN_EPS = "0.45", "0.2"


def planned_runs(out: pathlib.Path, betas, *, trades_ft: bool = False, trades_more: bool = False,
                 trades_epochs: int = 0, trades_kl: float = 0.0, mma: bool = False,
                 ace: bool = False) -> list:
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
  # With ace, the TRADES branch is also evaluated with APGDconf at 2 eps: TRADES_SR of Fig. 3/4.
  conf = {"conf": True} if ace else {}
  runs.append(("trades", {"loss": "trades", **kl, "init": str(trades_init), **epochs, **conf}))
  branch = str(out / "trades" / "model")
  if trades_ft:
    runs.append(("trades_ft", {"loss": "trades", **kl, "init": branch, **TRADES_FT}))
  if trades_more:
    runs.append(("trades_more", {"loss": "trades", **kl, "init": branch}))
  runs += [(f"era_{b:g}", {"loss": "era", "beta": float(b), "init": branch}) for b in betas]
  if mma:
    runs.append(("mma", {"loss": "mma", "init": branch, "train_eps": MMA_D_MAX}))
  if ace:
    runs.append(("ibp", {"loss": "ibp", "arch": "gowal-small", "train_eps": IBP_TRAIN_EPS}))
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


def _selection_labels(classifier, x, y, eps: str) -> np.ndarray:
  """ACE's selection targets: 1 where `classifier` is IBP-certified at eps and accurate."""
  from jax_abstain.evaluation import selection   # jax and the attacks: only when training
  cert = selection.certified_columns(classifier, x, radii=[eps])[f"is_cert@{eps}"]
  predict = jax.jit(lambda xb: jnp.argmax(classifier(xb), -1))
  pred = np.concatenate([np.asarray(predict(x[i:i + 500])) for i in range(0, len(x), 500)])
  return ((cert == 1) & (pred == np.asarray(y))).astype(np.int32)


def _balanced(x, labels):
  """(x, labels) with the rarer class repeated up to the size of the other (our choice: on the
  86/14 labels of the sweep, IBP training settled on a constant score, the label prior, which
  selects everything or nothing)."""
  rare = int(labels.mean() > 0.5) ^ 1
  idx = np.flatnonzero(labels == rare)
  if len(idx) == 0:
    return x, labels
  extra = np.resize(idx, max(len(labels) - 2 * len(idx), 0))
  return np.concatenate([x, x[extra]]), np.concatenate([labels, labels[extra]])


def train_selection_network(out, classifier_report, eps: str, *, seed: int = 0,
                            train_missing: bool = True) -> pathlib.Path:
  """ACE-IBP's selection network (Mueller et al. 2020; paper eq. 15) for the ``ibp`` run.

  Trains ``gowal-small`` with 2 classes and the ``ibp`` loss (`configs/mnist_era.py`'s IBP
  settings, train radius `IBP_TRAIN_EPS`) on the training digits labelled by
  `_selection_labels`, classes balanced (`_balanced`), saves it to ``<out>/ace_ibp/model`` and writes the classifier's report
  with the selection columns at eps (`evaluation.selection.selection_columns`, APGDconf 20
  steps) and ``is_cert@<eps>, is_cert@<2 eps>`` to ``<out>/ace_ibp/reports/ace_ibp.csv``
  (skipped when it exists).

  Returns:
    The path of that report.
  """
  from jax_abstain import training
  from jax_abstain.evaluation import selection
  workdir = pathlib.Path(out) / "ace_ibp"
  report = workdir / "reports" / "ace_ibp.csv"
  if report.exists():
    print("[sweep] ace_ibp: done, skipped", flush=True)
    return report
  if not train_missing:
    raise UserError(f"run ace_ibp: no report {report}; run the sweep to train it")
  classifier = models.load(pathlib.Path(classifier_report).parents[1] / "model")
  x, y = data.load("mnist5k", "train")
  labels = _selection_labels(classifier, x, y, eps)
  print(f"[sweep] ace_ibp: selection network on {labels.mean():.1%} positive labels", flush=True)
  x, labels = _balanced(np.asarray(x), labels)
  epochs, _, lr, _ = mnist_era._DEFAULTS["ibp"]
  net = models.create("gowal-small", num_classes=2, seed=seed)
  settings = dict(loss="ibp", eps=IBP_TRAIN_EPS, epochs=epochs, lr=lr, batch_size=50,
                  select_every=0, **mnist_era._LOSS_EXTRA["ibp"])
  training.fit(net, x, labels, settings, workdir=workdir, name="sn", seed=seed, progress=False)
  net.eval()
  models.save(net, workdir / "model", arch="gowal-small", options={"num_classes": 2},
              source={"loss": "ibp", "labels": "ibp certified and accurate"}, overwrite=True)
  idx = reports.read_report(classifier_report)["sample_idx"]
  x_test = data.load("mnist5k", "test")[0][idx]
  columns = {**selection.selection_columns(net, x_test, radii=[eps], key=jax.random.key(seed),
                                           sample_idx=idx),
             **selection.certified_columns(classifier, x_test,
                                           radii=[eps, radii.double_radius(eps)])}
  selection.add_columns(classifier_report, columns, report)
  return report


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
  if "ibp" in found:
    found["ace_ibp"] = train_selection_network(out, found.pop("ibp"), eps,
                                               train_missing=train_missing)
  cols = {name: reports.read_report(path) for name, path in found.items()}
  summary = summarize(cols, eps)
  print(write_outputs(out, summary, cols))
  return summary
