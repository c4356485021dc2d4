"""One command for the tables and plots of a set of per-sample reports.

    python -m jax_abstain.jobs.report --reports runs/synth/reports/*.csv --core std --eps 0.1 \
        --out runs/synth/report
    python -m jax_abstain.jobs.report --reports runs/mnist_std/reports/std.csv \
        runs/mnist_era/reports/era.csv --core std --eps 0.1 --out runs/mnist_report

Writes into --out (atomically, file by file):
  splits.md, splits.csv     the four data splits per model and radius (paper Tables 7-8)
  models.csv, fig2_robustness.png        robust accuracy vs robust inaccuracy at eps (Fig. 2)
  abstain.csv, fig3_abstain.png          robust selection vs abstain-model robust accuracy,
                                         robustness indicator at 2 eps, softmax response over
                                         tau when the report has adv_conf@<2 eps> (Fig. 3)
  compositions.csv, fig4_composition.png every other model composed with --core (Fig. 4)
  cascade.json              best cascade of all non-core models before the core vs the best
                            2-composition (`jax_abstain.cascades`), when --core is given
  report.md                 all tables in one markdown file
and prints report.md. Report names are the file stems (``std.csv`` -> ``std``) unless --names
is given. Figure 1 (decision regions) needs the models, not reports: mode figure1 writes it.
"""
import argparse
import pathlib
import sys

from jax_abstain import cascades, compose, files, radii, reports
from jax_abstain.analysis import tables
from jax_abstain.errors import UserError


def _names(paths, given):
  if given:
    if len(given) != len(paths):
      raise UserError(f"--names: expected {len(paths)} names (one per report), got {len(given)}")
    names = list(given)
  else:
    names = [pathlib.Path(p).stem for p in paths]
  if len(set(names)) != len(names):
    raise UserError(f"--names: report names must be distinct, got {', '.join(names)}; pass --names")
  return names


def _default_eps(named: dict) -> str:
  common = set.intersection(*(set(tables.report_radii(c)) for c in named.values()))
  if not common:
    raise UserError("--eps: the reports share no is_rob@<r> radius; give --eps")
  return min(common, key=radii.parse_radius)


def _md_table(rows, keys) -> str:
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  for r in rows:
    lines.append("| " + " | ".join("" if r.get(k) is None else str(r.get(k)) for k in keys) + " |")
  return "\n".join(lines)


def build(paths, out, *, eps=None, core=None, names=None, taus=None, title="") -> str:
  """Writes every table and figure for the reports at `paths` into `out`; returns report.md.

  Every number is computed before the first file is written, so bad input (a missing column,
  an unknown core) leaves `out` untouched.
  """
  out = pathlib.Path(out)
  names = _names(paths, names)
  named = {n: reports.read_report(p) for n, p in zip(names, paths)}
  compose.check_aligned(list(named.values()), [f"report {n}" for n in names])
  eps = radii.format_radius(eps) if eps else _default_eps(named)
  title = title or ", ".join(names)
  split_rows = tables.split_rows(named)
  splits_md = tables.splits_markdown(split_rows)
  model_rows = tables.model_rows(named, eps)
  abstain = tables.abstain_rows(named, eps, taus=taus)
  comps, cascade = None, None
  if core is not None:
    comps = tables.composition_rows(named, core, eps, taus=taus)
    # Models without an is_rob column at >= 2 eps cannot select soundly; leave them out.
    others = [n for n in names if n != core and cascades.candidate_radii(named[n], eps)]
    if others:
      cascade = cascades.optimise([named[n] for n in others], named[core], eps, names=others)

  from jax_abstain.analysis import plots  # matplotlib only when figures are drawn
  tables.write_csv(out / "splits.csv", split_rows)
  files.atomic_write(out / "splits.md", splits_md + "\n")
  tables.write_csv(out / "models.csv", model_rows)
  plots.robustness_pareto(model_rows, out / "fig2_robustness.png", f"{title} (eps={eps})")
  tables.write_csv(out / "abstain.csv", abstain)
  plots.abstain_pareto(abstain, out / "fig3_abstain.png", f"abstain models, {title} (eps={eps})")
  sections = [f"# Report: {title}", "", "## Data splits (Tables 7-8)", "", splits_md, "",
              f"## Models at eps={eps} (Fig. 2)", "",
              _md_table(model_rows, ["model", "nat_acc", "rob_acc", "rob_inacc"]), "",
              f"## Abstain models at eps={eps}, selection at {radii.double_radius(eps)} (Fig. 3)", "",
              _md_table([r for r in abstain if r["selector"] == "robustness"],
                        ["model", "selector", "rob_sel", "commit_prec"])]
  if comps is not None:
    tables.write_csv(out / "compositions.csv", comps)
    plots.composition_pareto(comps, out / "fig4_composition.png",
                             f"2-compositions with core {core} (eps={eps})")
    sections += ["", f"## 2-compositions with core {core} (Fig. 4)", "",
                 _md_table([r for r in comps if r["selector"] in ("none", "robustness")],
                           ["branch", "core", "selector", "nat_acc", "rob_acc", "rob_sel"])]
  if cascade is not None:
    files.write_json(out / "cascade.json", cascade)
    sections += ["", "## Cascade search", "", "```", cascades.format_result(cascade), "```"]
  text = "\n".join(sections) + "\n"
  files.atomic_write(out / "report.md", text)
  return text


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(prog="python -m jax_abstain.jobs.report", description=__doc__.split("\n")[0])
  parser.add_argument("--reports", nargs="+", required=True, help="per-sample report CSVs")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--eps", default=None, help="threat radius of Fig. 2-4 (default: the "
                      "smallest is_rob radius all reports share)")
  parser.add_argument("--core", default=None, help="name of the core model's report (Fig. 4, cascades)")
  parser.add_argument("--names", nargs="+", default=None, help="display names, one per report")
  parser.add_argument("--tau-grid", nargs="+", type=float, default=None,
                      help="softmax-response thresholds (default linspace(0, 0.99, 20))")
  parser.add_argument("--title", default="", help="figure title prefix")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)
  text = build(args.reports, args.out, eps=args.eps, core=args.core, names=args.names,
               taus=args.tau_grid, title=args.title)
  print(text, end="")
  return text


if __name__ == "__main__":
  from jax_abstain.cli import common as cli
  cli.run_with_clean_errors(main, sys.argv[1:])
