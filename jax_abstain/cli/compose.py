"""Compose per-sample reports (paper eq. 12): abstain models in cascade order, then the core.

    jax-abstain-compose --models ERA.csv STD.csv --eps 1/255 --json comp.json
    jax-abstain-compose --models ERA.csv TRADES.csv STD.csv --eps 1/255          # a cascade
    jax-abstain-compose --models TRADES.csv STD.csv --eps 1/255 --selector softmax \
        --tau-grid                         # softmax response, tau in linspace(0, 0.99, 20)

(``python -m jax_abstain.cli.compose`` is the same.) Every model but the last answers where
its selector fires: by default its robustness indicator at ``--select-at`` (default 2 eps,
the sound choice of section 5). Each report is asked only for what its role uses (the core:
its accuracy and robustness at ``--eps``); with a certified abstain model only certified
robustness counts. Prints a markdown table (`analysis.markdown.alone_and_composed_table`):
each model alone, the composition and its gain over the core alone;
``--json`` writes the result of `jax_abstain.compose.compose_reports` (or the tau grid) with
``alone`` and ``gain``; both say which robustness (certified, empirical or none) each model
contributed. Bad input is one
line on stderr, exit status 2, before anything is written.
"""
import pathlib
import sys

from jax_abstain import compose, files, metrics, reports, selectors, validation
from jax_abstain.analysis import markdown
from jax_abstain.cli import common as cli
from jax_abstain.errors import UserError


def _parser():
  p = cli.ArgumentParser(prog="jax-abstain-compose", description=__doc__.split("\n")[0])
  p.add_argument("--models", nargs="+", required=True,
                 help="per-sample reports: abstain models in cascade order, core model last")
  p.add_argument("--eps", required=True, help="threat radius, e.g. 1/255")
  p.add_argument("--select-at", nargs="+", default=None,
                 help="selector radius per abstain model (default: 2*eps)")
  p.add_argument("--selector", default="robustness",
                 help=f"abstain selector: {', '.join(selectors.SELECTORS)} (default robustness)")
  p.add_argument("--tau", type=float, default=None, help="softmax-response threshold")
  p.add_argument("--tau-grid", nargs="*", default=None,
                 help="compose for each threshold (no values: linspace(0, 0.99, 20))")
  p.add_argument("--json", default=None, help="write the result here")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def _parse_taus(values) -> list:
  taus = []
  for v in values:
    try:
      taus.append(float(v))
    except ValueError:
      raise UserError(f"--tau-grid: expected numbers in [0, 1], got {v!r}") from None
  return taus


def _check(args) -> None:
  """Every argument, before any report is read or anything written."""
  if len(args.models) < 2:
    raise UserError("--models: give at least one abstain model report and a core model report")
  validation.check_radius(args.eps, "--eps")
  validation.check_radii(args.select_at or [], "--select-at", allow_empty=True)
  for path in args.models:
    files.check_file(path, "report", "--models")
  if args.json:
    files.check_output(args.json, "--json", overwrite=True)
  validation.check_choice(args.selector, "--selector", selectors.SELECTORS)
  softmax = args.selector in selectors.TAU_SELECTORS
  if (args.tau is not None or args.tau_grid is not None) and not softmax:
    raise UserError("--tau/--tau-grid: only with --selector softmax, softmax-natural, "
                    "sn-certified or sn-empirical")
  if softmax and args.tau is None and args.tau_grid is None:
    raise UserError(f"--selector {args.selector}: give --tau T or --tau-grid [T ...]")


def display_names(paths) -> list:
  """The reports' file names without folder and suffix when they differ, else the paths."""
  stems = [pathlib.Path(p).stem for p in paths]
  return stems if len(set(stems)) == len(stems) else [str(p) for p in paths]


def models_alone(columns, names, eps) -> list:
  """Each model on its own at eps (nat_acc, rob_acc, rob_inacc in percent, unrounded), its
  robustness counted as in the composition (`compose.model_robustness`: in a certified
  composition an empirical model counts none)."""
  certified = compose.is_certified_composition(columns)
  rows = []
  for j, (name, cols) in enumerate(zip(names, columns)):
    kind, rob = compose.model_robustness(cols, eps, certified=certified)
    s = metrics.summary(compose.model_accuracy(cols), rob)
    rows.append({"model": name, "role": "core" if j == len(columns) - 1 else "abstain",
                 "robustness": kind, **{k: s[k] for k in ("nat_acc", "rob_acc", "rob_inacc")}})
  return rows


def _with_gain(row: dict, core: dict) -> dict:
  """A composition row with its gain over the core alone (points of nat_acc and rob_acc; the
  composition's numbers are rounded to 2 decimals, so the core's are too)."""
  return {**row, "gain": {k: round(row[k] - round(core[k], 2), 2) for k in ("nat_acc", "rob_acc")}}


def _compose(argv) -> dict:
  args = _parser().parse_args(argv)
  _check(args)
  columns = [reports.read_report(p) for p in args.models]
  if args.tau_grid is not None:   # composing first: its errors name the report and its role
    rows = compose.compose_tau_grid(columns, args.eps, _parse_taus(args.tau_grid), args.select_at,
                                    selector=args.selector, names=args.models)
  else:
    rows = [compose.compose_reports(columns, args.eps, args.select_at, selector=args.selector,
                                    tau=args.tau, names=args.models)]
  alone = models_alone(columns, display_names(args.models), args.eps)
  rows = [_with_gain(r, alone[-1]) for r in rows]
  if args.tau_grid is not None:
    result = {"eps": rows[0]["eps"], "selector": args.selector, "models": list(args.models),
              "robustness": rows[0]["robustness"], "alone": alone, "rows": rows}
  else:
    result = {**rows[0], "models": list(args.models), "alone": alone}
  print(markdown.alone_and_composed_table(alone, rows))
  if args.json:
    files.write_json(args.json, result)
  return result


def main(argv=None) -> int:
  """Console script ``jax-abstain-compose``: exit 0, or 2 and one line per problem."""
  return cli.entry(_compose, argv)


if __name__ == "__main__":
  sys.exit(main())
