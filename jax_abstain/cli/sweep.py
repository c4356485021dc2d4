"""python -m jax_abstain.cli.sweep --out runs/mnist_era [--eps 0.1] [--betas 0.1 0.5] ...

    python -m jax_abstain.cli.sweep --out runs/mnist_sweep6 --eps 0.15 --trades-epochs 8 \
        --trades-kl 6 --betas 0.1 0.5 1 --trades-ft --extra eval_limit=0

The ERA beta sweep (`jax_abstain.jobs.sweep`): trains the std core, the TRADES branch and one
ERA branch per beta in-process, one workdir each under --out (a rerun skips finished runs),
composes every branch with the core and writes summary.json, summary.md and the Pareto plots.
Bad arguments print one line and exit 2 (``--debug`` shows the traceback).
"""
import sys

from jax_abstain import radii
from jax_abstain.cli import common as cli
from jax_abstain.configs import common as config_args
from jax_abstain.errors import UserError


def _parser():
  parser = cli.ArgumentParser(prog="python -m jax_abstain.cli.sweep",
                              description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="sweep folder (one workdir per run)")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  parser.add_argument("--config", default="mnist_era",
                      help="train-mode config name or file taking the arguments loss, init, "
                      "beta, epochs, trades_beta, lr and eps (the threat radius) like the "
                      "default, mnist_era")
  parser.add_argument("--eps", default="0.1", help="threat radius; branches train at 2 eps")
  parser.add_argument("--betas", nargs="+", type=float, default=[0.1, 0.5],
                      help="ERA beta values (weight of the TRADES term, eq. 4)")
  parser.add_argument("--extra", default="", help="config arguments added to every run, "
                      "e.g. eval_limit=200,seed=1")
  parser.add_argument("--trades-ft", action="store_true",
                      help="also fine-tune TRADES with ERA's budget (same-budget baseline)")
  parser.add_argument("--trades-more", action="store_true",
                      help="also train TRADES for one more epoch (a more robust branch)")
  parser.add_argument("--trades-epochs", type=int, default=0,
                      help="TRADES epochs (default: the config's, 1)")
  parser.add_argument("--trades-kl", type=float, default=0.0,
                      help="TRADES KL weight, reached through a KL-1 warm-up run (trades_warm)")
  parser.add_argument("--mma", action="store_true",
                      help="also fine-tune MMA (Ding et al.) from the TRADES branch")
  parser.add_argument("--ace", action="store_true",
                      help="also train an IBP classifier and its ACE selection network")
  parser.add_argument("--summary-only", action="store_true", help="skip training; summarise")
  return parser


def _sweep(argv) -> dict:
  from jax_abstain.jobs import sweep  # imports jax: after the arguments are checked
  args = _parser().parse_args(argv)
  radii.parse_radius(args.eps, name="--eps")
  if any(b <= 0 for b in args.betas):
    raise UserError(f"--betas: expected positive numbers, got {args.betas}")
  if args.trades_kl < 0:
    raise UserError(f"--trades-kl: expected a KL weight >= 0 (0: no warm-up run), "
                    f"got {args.trades_kl:g}")
  runs = sweep.planned_runs(args.out, args.betas, trades_ft=args.trades_ft,
                            trades_more=args.trades_more, trades_epochs=args.trades_epochs,
                            trades_kl=args.trades_kl, mma=args.mma, ace=args.ace)
  return sweep.run_sweep(args.out, runs, eps=args.eps, config=args.config,
                         extra=config_args.parse_items(args.extra),
                         train_missing=not args.summary_only)


def main(argv=None) -> int:
  """The command line (console script ``jax-abstain-sweep``); argv defaults to
  ``sys.argv[1:]``. Bad input exits 2 with one line; the summary goes to <out>/summary.json."""
  return cli.entry(_sweep, argv)


if __name__ == "__main__":
  sys.exit(main())
