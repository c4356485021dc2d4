"""The report job: the tables and Pareto figures of a set of per-sample reports.

    results = report.run(["runs/synth/reports/std.csv", "runs/synth/reports/era.csv"],
                         "runs/synth/report", eps="0.1", core="std")
    print(results["markdown"])

Writes into `out` (atomically, file by file):
  splits.md, splits.csv     the four data splits per model and radius (paper Tables 7-8)
  models.csv                nat_acc, rob_acc, rob_inacc per model at eps and at the Fig. 2 radius
  abstain.csv               robust selection vs abstain-model robust accuracy: robustness
                            indicator at 2 eps, softmax response over tau when the report has
                            adv_conf@<2 eps> (Fig. 3)
  compositions.csv          every other model composed with `core` (Fig. 4), when core is given
  fig2_rob_acc_vs_rob_inacc.png, fig3_rob_sel_vs_rob_acc.png, fig4_composition.png
                            the Pareto figures (`analysis.plots.pareto_figures`, the names the
                            beta sweep uses too); Fig. 2 at 2 eps unless `radius` says otherwise
  cascade.json              best cascade of all non-core models before the core vs the best
                            2-composition (`jax_abstain.cascades`), when core is given: chosen
                            on a seeded selection set of the samples, measured on the held-out
                            rest (``selection`` holds the selection-set numbers)
  report.md                 all tables in one markdown file
Report names are the file stems (``std.csv`` -> ``std``) unless `names` are given. Figure 1
(decision regions) needs the models, not reports: the toy2d job writes it. The command line is
`jax_abstain.cli.report`.
"""
import pathlib

from jax_abstain import cascades, compose, files, radii, reports
from jax_abstain.analysis import markdown, plots, tables
from jax_abstain.errors import UserError


def _names(paths, given) -> list:
  if given:
    if len(given) != len(paths):
      raise UserError(f"--names: expected {len(paths)} names (one per report), got {len(given)}")
    names = list(given)
  else:
    names = [pathlib.Path(p).stem for p in paths]
  if len(set(names)) != len(names):
    raise UserError(f"--names: report names must be distinct, got {', '.join(names)}; "
                    "pass --names")
  return names


def _default_eps(named: dict) -> str:
  common = set.intersection(*(set(tables.report_radii(c)) for c in named.values()))
  if not common:
    raise UserError("--eps: the reports share no is_rob@<r> radius; give --eps")
  return min(common, key=radii.parse_radius)


def _tables(named: dict, eps: str, radius: str, core, taus, cascade_split=(0.5, 0)) -> dict:
  """Every table of the report (rows of `analysis.tables`) and the cascade search."""
  # The core never selects: views at a selection radius leave it out when its report lacks it.
  at_radius = tables.selecting_models(named, core, radius)
  out = {"splits": tables.split_rows(named),
         "models": tables.model_rows(named, eps) + (tables.model_rows(at_radius, radius)
                                                    if radius != eps else []),
         "abstain": tables.abstain_rows(tables.abstain_models(named, core), eps, taus=taus),
         "compositions": None, "cascade": None}
  if core is not None:
    out["compositions"] = tables.composition_rows(named, core, eps, taus=taus)
    # Models without an is_rob column at >= 2 eps cannot select soundly; leave them out.
    others = [n for n in named if n != core and cascades.candidate_radii(named[n], eps)]
    if others:
      # One sample cannot be split: it is chosen on and measured in-sample (labelled so).
      fraction = cascade_split[0] if len(named[core]["sample_idx"]) > 1 else 0.0
      out["cascade"] = cascades.optimise([named[n] for n in others], named[core], eps,
                                         names=others, val_fraction=fraction,
                                         seed=cascade_split[1])
  return out


def _markdown(t: dict, title: str, eps: str, radius: str, core) -> str:
  """report.md: every table of `_tables` in markdown."""
  sections = [f"# Report: {title}", "", "## Data splits (Tables 7-8)", "",
              tables.splits_markdown(t["splits"]), "",
              f"## Models at eps={eps}" + (f" and {radius}" if radius != eps else "")
              + f" (Fig. 2 at {radius})", "",
              markdown.table(t["models"], ["model", "eps", "nat_acc", "rob_acc", "rob_inacc"]), "",
              f"## Abstain models at eps={eps}, selection at {radii.double_radius(eps)} (Fig. 3)",
              "", markdown.table([r for r in t["abstain"] if r["selector"] == "robustness"],
                                 ["model", "selector", "rob_sel", "commit_prec"])]
  if t["compositions"] is not None:
    sections += ["", f"## 2-compositions with core {core} (Fig. 4)", "",
                 markdown.table([r for r in t["compositions"]
                                 if r["selector"] in ("none", "robustness")],
                                ["branch", "core", "selector", "nat_acc", "rob_acc", "rob_sel",
                                 "robustness"])]
  if t["cascade"] is not None:
    sections += ["", "## Cascade search (chosen on a selection set, measured held out)", "",
                 markdown.cascade_table(t["cascade"])]
  return "\n".join(sections) + "\n"


def run(paths, out, *, eps=None, core=None, names=None, taus=None, radius=None,
        title: str = "", cascade_val_fraction: float = 0.5, cascade_seed: int = 0) -> dict:
  """Writes every table and figure for the reports at `paths` into folder `out`.

  Every number is computed before the first file is written, so bad input (a missing column,
  an unknown core) leaves `out` untouched.

  Args:
    paths: per-sample report CSVs (`reports.read_report`) of the same samples.
    out: output folder.
    eps: threat radius (default: the smallest ``is_rob@<r>`` radius all reports share).
    core: name of the core model's report (Fig. 4, compositions, cascades), or None.
    names: display names, one per report (default: the file stems).
    taus: softmax-response thresholds (default `compose.default_tau_grid`).
    radius: radius of Fig. 2 (default 2 eps, the selection radius).
    title: figure and report title (default: the names).
    cascade_val_fraction: share of the samples the cascade search chooses on; its numbers are
      measured on the rest (`cascades.optimise`; 0 = in-sample).
    cascade_seed: seed of that split.

  Returns:
    ``{"eps", "radius", "splits", "models", "abstain", "compositions", "cascade", "figures",
    "markdown"}``: the table rows, the figure paths and the text of report.md.

  Raises:
    UserError: names of the wrong count or not distinct, reports of different samples, a
      missing column, an unknown core.
  """
  out = pathlib.Path(out)
  names = _names(paths, names)
  named = {n: reports.read_report(p) for n, p in zip(names, paths)}
  compose.check_aligned(list(named.values()), [f"report {n}" for n in names])
  eps = radii.format_radius(eps) if eps else _default_eps(named)
  radius = radii.format_radius(radius) if radius else radii.double_radius(eps)
  title = title or ", ".join(names)
  t = _tables(named, eps, radius, core, taus, (cascade_val_fraction, cascade_seed))
  text = _markdown(t, title, eps, radius, core)
  for name in ("splits", "models", "abstain", "compositions"):
    if t[name] is not None:
      tables.write_csv(out / f"{name}.csv", t[name])
  files.atomic_write(out / "splits.md", tables.splits_markdown(t["splits"]) + "\n")
  figures = plots.pareto_figures(named, core, eps, out, radius=radius, taus=taus, title=title)
  if t["cascade"] is not None:
    files.write_json(out / "cascade.json", t["cascade"])
  files.atomic_write(out / "report.md", text)
  return {"eps": eps, "radius": radius, **t, "figures": {k: str(v) for k, v in figures.items()},
          "markdown": text}
