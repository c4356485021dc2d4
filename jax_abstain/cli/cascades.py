"""Search the best cascade of abstain models before a core model (`jax_abstain.cascades`).

    jax-abstain-cascades --abstain ERA_b0.1.csv ERA_b1.csv TRADES.csv --core STD.csv \
        --eps 1/255 --json cascade.json

(``python -m jax_abstain.cli.cascades`` is the same.) The search chooses on a seeded selection
set of the samples (``--val-fraction``, default half, ``--seed``) and the numbers it reports are
measured on the held-out rest (``--val-fraction 0``: chosen and measured on all samples,
in-sample). Prints the core alone, the best 2-composition and the best cascade, selection-set
and held-out columns, as a markdown table (`analysis.markdown.cascade_table`);
``--json`` writes the result of `cascades.optimise`. The core report needs only ``is_acc`` and
``is_rob@<eps>`` (or certified columns, counted as certified robustness); the output says which
robustness each model contributed. Report names are the file stems. Bad
input is one line on stderr, exit status 2, before anything is written.
"""
import pathlib
import sys

from jax_abstain import cascades, files, reports, validation
from jax_abstain.analysis import markdown
from jax_abstain.cli import common as cli


def _parser():
  p = cli.ArgumentParser(prog="jax-abstain-cascades", description=__doc__.split("\n")[0])
  p.add_argument("--abstain", nargs="+", required=True, help="abstain model reports")
  p.add_argument("--core", required=True, help="core model report")
  p.add_argument("--eps", required=True, help="threat radius, e.g. 1/255")
  p.add_argument("--select-radii", nargs="+", default=None,
                 help="candidate selector radii (default: every is_rob@r column, r >= 2 eps)")
  p.add_argument("--min-select-at", default=None,
                 help="smallest selector radius considered (default 2*eps)")
  p.add_argument("--max-length", type=int, default=None, help="longest cascade")
  p.add_argument("--val-fraction", type=float, default=0.5,
                 help="share of the samples the search chooses on; the numbers are measured "
                      "on the rest (default 0.5; 0 = in-sample: choose and measure on all)")
  p.add_argument("--seed", type=int, default=0, help="seed of the selection/held-out split")
  p.add_argument("--json", default=None, help="write the result here")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def _search(argv) -> dict:
  args = _parser().parse_args(argv)
  if args.max_length is not None:
    validation.check_int(args.max_length, "--max-length", minimum=1)
  validation.check_radius(args.eps, "--eps")
  validation.check_radii(args.select_radii or [], "--select-radii", allow_empty=True)
  validation.check_float(args.val_fraction, "--val-fraction", low=0.0, high=1.0, high_open=True)
  if args.min_select_at is not None:
    validation.check_radius(args.min_select_at, "--min-select-at")
  for path in [*args.abstain, args.core]:
    files.check_file(path, "report", "--abstain/--core")
  if args.json:
    files.check_output(args.json, "--json", overwrite=True)
  columns = [reports.read_report(p) for p in args.abstain]
  names = [pathlib.Path(p).stem for p in args.abstain]
  if len(set(names)) != len(names):
    names = [str(p) for p in args.abstain]
  result = cascades.optimise(columns, reports.read_report(args.core), args.eps, names=names,
                             select_radii=args.select_radii, min_select_at=args.min_select_at,
                             max_length=args.max_length, val_fraction=args.val_fraction,
                             seed=args.seed)
  result["reports"] = {"abstain": list(args.abstain), "core": args.core}
  if args.json:
    files.write_json(args.json, result)
  print(markdown.cascade_table(result))
  return result


def main(argv=None) -> int:
  """Console script ``jax-abstain-cascades``: exit 0, or 2 and one line per problem."""
  return cli.entry(_search, argv)


if __name__ == "__main__":
  sys.exit(main())
