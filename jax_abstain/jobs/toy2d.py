"""The toy2d job: the paper's Figure 1 study on three 2-D Gaussians (mode ``toy2d``).

    python -m jax_abstain.main --config=configs/synth.py --workdir=runs/synth
    results = toy2d.run(job, workdir)          # job: the checked `jobs.schema.Job`

Trains every model of ``job.toy2d.models`` (std, TRADES, ERA, and the ERA branch trained at
2 eps) on the training draw, evaluates each with APGD-CE at eps and 2 eps into a per-sample
report (`evaluation.evaluate`), composes H = ((branch, S_ERI at 2 eps), core) from the reports
(eq. 12), and writes into the workdir:

  results.json            per model nat_acc, rob_acc, rob_inacc (percent, unrounded), the four
                          splits, the same at 2 eps; ``composition`` with nat_acc, rob_acc,
                          rob_sel; ``composition_branch_trained_at_eps`` (H with the ERA
                          model trained at eps as branch), also in the printed table
  reports/<model>.csv     per-sample reports (docs/design.md, Contracts)
  decision_regions.png    decision regions of std, TRADES, ERA and H with the points marked
  checkpoints/<model>/    orbax checkpoints (a rerun resumes and skips finished work)
"""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jax_abstain import (compose, data, evaluation, files, metrics, models, radii, reports,
                         training)
from jax_abstain.analysis import plots
from jax_abstain.evaluation import live


def _summary(cols: dict, eps_text: str) -> dict:
  return metrics.summary(cols["is_acc"], cols[f"is_rob@{eps_text}"])


def _train_and_evaluate(job, workdir, name, x_train, y_train, x_eval, y_eval):
  """Trains model `name` of the study (resuming), evaluates it; returns (model, report)."""
  cfg = job.toy2d.models[name]
  logging.info("model %s: loss=%s eps=%g beta=%g", name, cfg.loss, cfg.eps, cfg.beta)
  m = job.model
  model = models.create(m.name, num_classes=m.num_classes, seed=job.seed, **m.options)
  training.fit(model, x_train, y_train, cfg, workdir=workdir, name=name, seed=job.seed)
  model.eval()   # attacks and plots use BN running statistics, dropout off
  path = workdir / "reports" / f"{name}.csv"
  evaluation.evaluate(model, x_eval, y_eval, job.eval, report_path=path)
  return model, reports.read_report(path)


def run(job, workdir) -> dict:
  """Runs the study; returns the dict also written to ``results.json``."""
  workdir = pathlib.Path(workdir)
  eps_text, eps2_text = job.eval.radii
  d = job.data
  x_train, y_train = data.load(d.name, "train", n=d.n, seed=d.data_seed)
  x_eval, y_eval = data.load(d.name, d.eval_split, n=d.n, seed=d.data_seed)
  trained, cols, results = {}, {}, {"eps": eps_text, "eval_split": d.eval_split, "models": {}}
  for name, cfg in job.toy2d.models.items():
    trained[name], cols[name] = _train_and_evaluate(job, workdir, name, x_train, y_train,
                                                    x_eval, y_eval)
    results["models"][name] = {"loss": cfg.loss, "train_eps": radii.format_radius(cfg.eps),
                               "beta": cfg.beta, **_summary(cols[name], eps_text),
                               "at_2eps": _summary(cols[name], eps2_text)}
  t = job.toy2d
  comp, _, _, shown = compose.compose_reports_per_sample(
      [cols[t.branch], cols[t.core]], eps_text, [t.select_at])
  results["composition"] = {"branch": t.branch, "core": t.core, **comp.summary(),
                            "select_at": shown[0]}
  if "era" in t.models and t.branch != "era":
    # For comparison: the ERA model trained at eps itself as the branch (still selected at 2 eps).
    alt = compose.compose_reports([cols["era"], cols[t.core]], eps_text, [t.select_at])
    results["composition_branch_trained_at_eps"] = {"branch": "era", "core": t.core, **alt}
  _plot(job, workdir, trained, cols, comp, x_eval)
  files.write_json(workdir / "results.json", results)
  print(format_table(results))
  return results


def _plot(job, workdir, trained, cols, comp, x_eval):
  """decision_regions.png: std, TRADES, ERA (those trained) and the composition H."""
  eps_text, t = job.eval.radii[0], job.toy2d
  points = jnp.asarray(plots.grid_points(t.grid))
  panels = []
  for name in [n for n in ("std", "trades", "era") if n in trained]:
    regions = jax.jit(lambda p, m=trained[name]: jnp.argmax(m(p), -1))(points)
    title = "L_TRADES" if name == "trades" else f"L_{name}"
    panels.append((title, regions, cols[name]["is_acc"], cols[name][f"is_rob@{eps_text}"], None))
  # H on the grid by live inference (eq. 12): the branch answers where APGD at the selector
  # radius does not flip it; the hatched area is where the core answers.
  branch, core = trained[t.branch], trained[t.core]
  selector = live.robustness_selector(branch, eps=radii.parse_radius(t.select_at),
                                      key=jax.random.key(job.seed + 1), n_iter=job.eval.n_iter)
  h_pred, answered_by = jax.jit(lambda p: live.predict([branch, core], [selector], p))(points)
  panels.append(("H = (ERA branch, S@2eps) + std core", h_pred, comp.is_acc, comp.is_rob,
                 np.asarray(answered_by) == 1))
  plots.decision_regions(workdir / "decision_regions.png", panels, x_eval,
                         num_classes=job.model.num_classes, eps=radii.parse_radius(eps_text),
                         grid=t.grid)


def format_table(results: dict) -> str:
  """The printed summary table (percent of the evaluated set, two decimals)."""
  lines = [f"Figure 1 at eps={results['eps']} (evaluated on the {results['eval_split']} split)",
           f"{'model':<12}{'nat_acc':>9}{'rob_acc':>9}{'rob_inacc':>11}{'rob_acc@2eps':>14}"]
  order = sorted(results["models"], key=lambda n: (["std", "trades", "era"] + [n]).index(n))
  for name in order:
    m = results["models"][name]
    lines.append(f"{name:<12}{m['nat_acc']:>9.2f}{m['rob_acc']:>9.2f}{m['rob_inacc']:>11.2f}"
                 f"{m['at_2eps']['rob_acc']:>14.2f}")
  c, alt = results["composition"], results.get("composition_branch_trained_at_eps")
  rows = [(f"H = ({c['branch']}, S@{c['select_at']}) + {c['core']}", c)]
  if alt:   # H with the ERA model trained at eps itself as the branch
    rows.append((f"H with {alt['branch']} trained at {results['eps']} "
                 f"(S@{alt['select_at'][0]}) + {alt['core']}", alt))
  width = max(len(label) for label, _ in rows) + 2
  lines.append(f"{'composition':<{width}}{'nat_acc':>9}{'rob_acc':>9}{'rob_sel':>9}")
  lines += [f"{label:<{width}}{r['nat_acc']:>9.2f}{r['rob_acc']:>9.2f}{r['rob_sel']:>9.2f}"
            for label, r in rows]
  return "\n".join(lines)
