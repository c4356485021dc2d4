"""ERA beta sweep: standard core, TRADES branch, ERA branches, compositions, Pareto plots.

    python -m jax_abstain.jobs.sweep --out runs/mnist_era --trades-epochs 8
    python -m jax_abstain.jobs.sweep --out runs/mnist_era_015 --eps 0.15 --betas 0.25 1 \
        --extra eval_limit=200

Each model is one ``mode=train`` job (`python -m jax_abstain.main`) of ``--config`` (default
configs/mnist_era.py) in ``<out>/<run>``; a run whose workdir already holds ``results.json``
is skipped, so an interrupted sweep resumes where it stopped. The runs, in order:

  std         the accurate core (standard training)
  trades_warm with --trades-kl: TRADES at 2 eps with KL weight 1, fine-tuned from std
  trades      TRADES at 2 eps, fine-tuned from std (or, with --trades-kl K, from trades_warm with
              KL weight K): the robust branch the paper starts from
  trades_ft   with --trades-ft: TRADES again with ERA's fine-tuning budget (same-budget baseline)
  trades_more with --trades-more: one more TRADES epoch on all digits (a stronger branch)
  era_<beta>  ERA at 2 eps fine-tuned from trades, one per ``--betas`` value

Every branch (trades, trades_ft, era_*) is composed with the std core at ``--eps``, selected by
its robustness at 2 eps (paper eq. 12, section 5). Written to ``<out>``: ``summary.json``,
``summary.md`` (the table) and the paper's Pareto plots: ``fig2_rob_acc_vs_rob_inacc.png``
(robust accuracy vs robust inaccuracy at the training radius, Fig. 2),
``fig3_selection.png`` (robust selection vs the abstain model's robust accuracy, Fig. 3) and
``fig4_composition.png`` (natural vs robust accuracy of the compositions, Fig. 4).
"""
import argparse
import pathlib
import subprocess
import sys

import numpy as np

from jax_abstain import compose, files, metrics, radii, reports
from jax_abstain.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "mnist_era.py"
# TRADES with the budget of one ERA fine-tuning (configs/mnist_era.py: era defaults).
TRADES_FT_ARGS = "epochs=1,lr=0.01"


def planned_runs(out: pathlib.Path, betas, extra: str = "", trades_ft: bool = False,
                 trades_more: bool = False, trades_epochs: int = 0, trades_kl: float = 0.0) -> list:
  """[(run name, config arguments)] in execution order; later runs start from earlier models.

  With `trades_kl`, TRADES is trained in two stages: ``trades_warm`` with the config's KL weight
  (1), then ``trades`` with KL weight `trades_kl` from it (the same epochs each). Straight from
  the std model, KL weight 6 at 2 eps = 0.3 collapsed to constant predictions (10% accuracy).
  """
  epochs = f",epochs={trades_epochs}" if trades_epochs else ""
  kl = f",trades_beta={trades_kl:g}" if trades_kl else ""   # every TRADES run after the warm-up
  runs, trades_init = [("std", "loss=std")], out / "std" / "model"
  if trades_kl:
    runs.append(("trades_warm", f"loss=trades,init={trades_init}{epochs}"))
    trades_init = out / "trades_warm" / "model"
  runs.append(("trades", f"loss=trades{kl},init={trades_init}{epochs}"))
  if trades_ft:
    runs.append(("trades_ft", f"loss=trades{kl},init={out / 'trades' / 'model'},{TRADES_FT_ARGS}"))
  if trades_more:
    runs.append(("trades_more", f"loss=trades{kl},init={out / 'trades' / 'model'}"))
  runs += [(f"era_{b:g}", f"loss=era,beta={b:g},init={out / 'trades' / 'model'}") for b in betas]
  return [(name, f"{args},{extra}" if extra else args) for name, args in runs]


def run_all(out: pathlib.Path, config: pathlib.Path, runs, eps: str) -> None:
  """Runs each (name, args) job of `planned_runs` unless ``<out>/<name>/results.json`` exists."""
  for name, args in runs:
    workdir = out / name
    if (workdir / "results.json").exists():
      print(f"[beta_sweep] {name}: done, skipped", flush=True)
      continue
    cmd = [sys.executable, "-m", "jax_abstain.main", f"--config={config}:eps={eps},{args}",
           f"--workdir={workdir}"]
    print(f"[beta_sweep] {name}: {' '.join(cmd[1:])}", flush=True)
    if subprocess.run(cmd).returncode:
      raise UserError(f"run {name} failed (see its output above); rerun the sweep to resume")


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
  return {k: round(float(v), 2) if isinstance(v, (float, np.floating)) else v
          for k, v in point.items()}


def summarize(out: pathlib.Path, names, eps: str, core: str = "std") -> dict:
  """Model points and compositions (each branch with the core at eps) from the runs' reports."""
  cols = {n: reports.read_report(out / n / "reports" / f"{_report_name(out / n)}.csv")
          for n in names}
  models = [model_point(n, cols[n], eps) for n in names]
  double = radii.double_radius(eps)
  comps, same = [], []
  for n in names:
    if n == core:
      continue
    b, t = cols[n], cols[core]
    sound = compose.compose_reports([b, t], eps)
    sel = np.asarray(b[f"is_rob@{double}"], bool)
    at_double = compose.compose_indicators(
        [sel], [b["is_acc"], t["is_acc"]], [b[f"is_rob@{double}"], t[f"is_rob@{double}"]]
    ).summary(sel, np.asarray(b["is_acc"], bool) & sel)
    for c, rows in ((sound, comps), (at_double, same)):
      rows.append({"run": f"{n} + {core}", "branch": n, "nat_acc": c["nat_acc"],
                   "rob_acc": c["rob_acc"], "rob_sel": c["rob_sel"],
                   "commit_prec": c["commit_prec"]})
  # `compositions`: threat eps, selection at 2 eps (sound, paper section 5). `same_radius`:
  # threat and selection both at 2 eps, the default of the authors' eval/comp.py and the
  # semantics of the paper's Table 4; an adversary who can flip the selector is not covered.
  return {"eps": eps, "select_at": double, "core": core, "models": models,
          "compositions": comps, "same_radius": same}


def _report_name(workdir: pathlib.Path) -> str:
  return files.read_json(workdir / "config.json")["name"]


def format_markdown(summary: dict) -> str:
  """The README table: models at eps and 2 eps, then the compositions at eps."""
  e, d = summary["eps"], summary["select_at"]
  lines = [f"| model | nat_acc | rob_acc @{e} | rob_inacc @{e} | rob_acc @{d} | "
           f"rob_inacc @{d} | rob_sel @{d} | commit_prec @{d} |", "|---" * 8 + "|"]
  for p in summary["models"]:
    lines.append(f"| {p['run']} | {p['nat_acc']:.2f} | {p['rob_acc@eps']:.2f} | "
                 f"{p['rob_inacc@eps']:.2f} | {p['rob_acc@2eps']:.2f} | {p['rob_inacc@2eps']:.2f} | "
                 f"{p['rob_sel@2eps']:.2f} | {p['commit_prec@2eps']:.2f} |")
  lines += ["", f"| composition (selected at {d}, core {summary['core']}) | nat_acc | "
                f"rob_acc @{e} | rob_sel @{d} | commit_prec |", "|---" * 5 + "|"]
  for c in summary["compositions"]:
    lines.append(f"| {c['run']} | {c['nat_acc']:.2f} | {c['rob_acc']:.2f} | {c['rob_sel']:.2f} | "
                 f"{c['commit_prec']:.2f} |")
  lines += ["", f"| composition at {d}, selected at {d} (not sound, authors' eval default) | "
                f"nat_acc | rob_acc @{d} | rob_sel @{d} | commit_prec |", "|---" * 5 + "|"]
  for c in summary.get("same_radius", []):
    lines.append(f"| {c['run']} | {c['nat_acc']:.2f} | {c['rob_acc']:.2f} | {c['rob_sel']:.2f} | "
                 f"{c['commit_prec']:.2f} |")
  return "\n".join(lines) + "\n"


def pareto(points, x_key: str, y_key: str, label_key: str, path, title: str, *,
           xlabel: str = None, ylabel: str = None, highlight=lambda label: label.startswith("era_"),
           connect: bool = True) -> None:
  """Scatter of `points` (dicts) with labels. Points whose label passes `highlight` (default:
  the ERA sweep) are blue circles, the others orange squares; with `connect` the blue ones are
  joined in x order, tracing the front."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from jax_abstain.analysis import plots
  fig, ax = plt.subplots(figsize=(5.2, 4.2))
  front = sorted((p for p in points if highlight(str(p[label_key]))), key=lambda p: p[x_key])
  if connect and len(front) > 1:
    ax.plot([p[x_key] for p in front], [p[y_key] for p in front], "-", color="#3182bd", lw=1)
  labels = {}   # points at the same place share one label
  for p in points:
    is_front = highlight(str(p[label_key]))
    ax.scatter(p[x_key], p[y_key], s=28, marker="o" if is_front else "s",
               color="#3182bd" if is_front else "#e6550d", zorder=3)
    labels.setdefault((p[x_key], p[y_key]), []).append(str(p[label_key]))
  ax.margins(x=0.25, y=0.15)
  ax.set_xlabel(xlabel or x_key)
  ax.set_ylabel(ylabel or y_key)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  _place_labels(fig, ax, sorted(labels.items()))
  plots.save_figure(fig, path)


# Label positions tried in turn (offset in points, horizontal alignment): right/left of the
# point, then further above/below (with a leader line) for crowded fronts.
_LABEL_SPOTS = [((dx, dy), "left" if dx > 0 else "right")
                for dy in (4, -11, 14, -21, 24, -31, 34, -41) for dx in (4, -4)]


def _place_labels(fig, ax, labels) -> None:
  """Annotates each ``(xy, names)`` at the first spot whose text box overlaps no earlier label
  (the last spot if all overlap): nearby points on a front stay readable."""
  fig.canvas.draw()   # settles the autoscaled limits, so measured boxes are where they print
  renderer = fig.canvas.get_renderer()
  placed = []
  for xy, names in labels:
    text = ", ".join(names)
    for offset, align in _LABEL_SPOTS:
      # Measured without a leader line: an Annotation's extent includes its arrow.
      ann = ax.annotate(text, xy, textcoords="offset points", xytext=offset, ha=align, fontsize=7)
      box = ann.get_window_extent(renderer).padded(3)   # a little air between labels
      if not any(box.overlaps(other) for other in placed) or (offset, align) == _LABEL_SPOTS[-1]:
        break
      ann.remove()
    if abs(offset[1]) > 20:   # far from its point: draw it again with a leader line
      ann.remove()
      ax.annotate(text, xy, textcoords="offset points", xytext=offset, ha=align, fontsize=7,
                  arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5))
    placed.append(box)


def write_outputs(out: pathlib.Path, summary: dict) -> None:
  """summary.json, summary.md and the three Pareto plots."""
  e, d = summary["eps"], summary["select_at"]
  files.write_json(out / "summary.json", summary)
  files.atomic_write(out / "summary.md", format_markdown(summary))
  branches = [p for p in summary["models"] if p["run"] != summary["core"]]
  pareto(branches, "rob_inacc@2eps", "rob_acc@2eps", "run", out / "fig2_rob_acc_vs_rob_inacc.png",
         f"Robust accuracy vs robust inaccuracy at {d} (Fig. 2)",
         xlabel=f"robust inaccuracy @{d} (%)", ylabel=f"robust accuracy @{d} (%)")
  pareto(branches, "rob_sel@2eps", "commit_prec@2eps", "run", out / "fig3_selection.png",
         f"Robust selection vs robust accuracy of the abstain model at {d} (Fig. 3)",
         xlabel=f"robust selection @{d} (%)", ylabel="robust accuracy of selected (%)")
  core = next(p for p in summary["models"] if p["run"] == summary["core"])
  points = [{"run": f"{c['branch']} + {summary['core']}", "nat_acc": c["nat_acc"],
             "rob_acc": c["rob_acc"]} for c in summary["compositions"]]
  points += [{"run": f"{p['run']} alone", "nat_acc": p["nat_acc"], "rob_acc": p["rob_acc@eps"]}
             for p in branches]
  points.append({"run": f"{summary['core']} (core alone)", "nat_acc": core["nat_acc"],
                 "rob_acc": core["rob_acc@eps"]})
  pareto(points, "rob_acc", "nat_acc", "run", out / "fig4_composition.png",
         f"Compositions (branch selected at {d}) and models at eps={e} (Fig. 4)",
         xlabel=f"robust accuracy @{e} (%)", ylabel="natural accuracy (%)",
         highlight=lambda label: " + " in label, connect=False)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(prog="python -m jax_abstain.jobs.sweep",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="sweep folder (one workdir per run)")
  parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="mode=train config file")
  parser.add_argument("--eps", default="0.1", help="threat radius; branches train at 2 eps")
  parser.add_argument("--betas", nargs="+", type=float, default=[0.1, 0.5],
                      help="ERA beta values (weight of the TRADES term, eq. 4)")
  parser.add_argument("--extra", default="", help="config arguments added to every run, "
                      "e.g. eval_limit=200")
  parser.add_argument("--trades-ft", action="store_true",
                      help="also fine-tune TRADES with ERA's budget (same-budget baseline)")
  parser.add_argument("--trades-more", action="store_true",
                      help="also train TRADES for one more epoch (a more robust branch)")
  parser.add_argument("--trades-epochs", type=int, default=0,
                      help="TRADES epochs (default: the config's, 1)")
  parser.add_argument("--trades-kl", type=float, default=0.0,
                      help="TRADES KL weight, reached through a KL-1 warm-up run (trades_warm)")
  parser.add_argument("--summary-only", action="store_true", help="skip training; summarise")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)
  radii.parse_radius(args.eps, name="--eps")
  eps = radii.format_radius(args.eps)
  if any(b <= 0 for b in args.betas):
    raise UserError(f"--betas: expected positive numbers, got {args.betas}")
  if args.trades_kl < 0:
    raise UserError(f"--trades-kl: expected a KL weight >= 0 (0: no warm-up run), "
                    f"got {args.trades_kl:g}")
  out = pathlib.Path(args.out)
  runs = planned_runs(out, args.betas, args.extra, args.trades_ft, args.trades_more,
                      args.trades_epochs, args.trades_kl)
  if not args.summary_only:
    run_all(out, pathlib.Path(args.config), runs, eps)
  summary = summarize(out, [n for n, _ in runs], eps)
  write_outputs(out, summary)
  print(format_markdown(summary))
  return summary


def run():
  from jax_abstain.cli import common as cli
  cli.run_with_clean_errors(main, sys.argv[1:])


if __name__ == "__main__":
  run()
