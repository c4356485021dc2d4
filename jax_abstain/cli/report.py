"""Write the tables and Pareto figures of a set of per-sample reports (`jax_abstain.jobs.report`).

    jax-abstain-report --reports runs/synth/reports/*.csv --core std --eps 0.1 \
        --out runs/synth/report
    jax-abstain-report --reports runs/mnist_std/reports/std.csv \
        runs/mnist_era/reports/era.csv --core std --eps 0.1 --out runs/mnist_report

(``python -m jax_abstain.cli.report`` is the same.) Writes splits.md/.csv, models.csv,
abstain.csv, compositions.csv, fig2_rob_acc_vs_rob_inacc.png, fig3_rob_sel_vs_rob_acc.png,
fig4_composition.png, cascade.json and report.md into --out, and prints report.md. Bad input
is one line on stderr, exit status 2, before anything is written.
"""
import sys

from jax_abstain import files, validation
from jax_abstain.cli import common as cli
from jax_abstain.jobs import report


def _parser():
  p = cli.ArgumentParser(prog="jax-abstain-report", description=__doc__.split("\n")[0])
  p.add_argument("--reports", nargs="+", required=True, help="per-sample report CSVs")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--eps", default=None, help="threat radius of Fig. 2-4 (default: the "
                 "smallest is_rob radius all reports share)")
  p.add_argument("--fig2-radius", default=None,
                 help="radius of Fig. 2, robust accuracy vs inaccuracy (default: 2*eps)")
  p.add_argument("--core", default=None, help="name of the core model's report (Fig. 4, cascades)")
  p.add_argument("--names", nargs="+", default=None, help="display names, one per report")
  p.add_argument("--tau-grid", nargs="+", type=float, default=None,
                 help="softmax-response thresholds (default linspace(0, 0.99, 20))")
  p.add_argument("--title", default="", help="figure and report title")
  p.add_argument("--cascade-val-fraction", type=float, default=0.5,
                 help="share of the samples the cascade search chooses on; its numbers are "
                      "measured on the rest (default 0.5; 0 = in-sample)")
  p.add_argument("--cascade-seed", type=int, default=0, help="seed of that split")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def _report(argv) -> dict:
  args = _parser().parse_args(argv)
  for name, value in (("--eps", args.eps), ("--fig2-radius", args.fig2_radius)):
    if value is not None:
      validation.check_radius(value, name)
  validation.check_float(args.cascade_val_fraction, "--cascade-val-fraction", low=0.0, high=1.0,
                         high_open=True)
  for path in args.reports:
    files.check_file(path, "report", "--reports")
  files.check_output(args.out, "--out", folder=True)
  result = report.run(args.reports, args.out, eps=args.eps, core=args.core, names=args.names,
                      taus=args.tau_grid, radius=args.fig2_radius, title=args.title,
                      cascade_val_fraction=args.cascade_val_fraction,
                      cascade_seed=args.cascade_seed)
  print(result["markdown"], end="")
  return result


def main(argv=None) -> int:
  """Console script ``jax-abstain-report``: exit 0, or 2 and one line per problem."""
  return cli.entry(_report, argv)


if __name__ == "__main__":
  sys.exit(main())
