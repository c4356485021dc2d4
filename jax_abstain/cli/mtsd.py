"""Converts the Mapillary Traffic Sign Dataset into 64x64 classification crops.

    jax-abstain-mtsd --src mtsd_v2_fully_annotated --out mtsd_cls [--workers 2]
    python -m jax_abstain.cli.mtsd --src ... --out ...          # the same command

The conversion (appendix A.1 of the paper: flagged and ``other-sign`` boxes dropped, eq. 16
random slack, 64x64 bilinear) and its output files are described in `jax_abstain.data.mtsd`.
Prints the summary (kept and dropped boxes, skipped inputs) as JSON. Bad input (no official
MTSD layout at ``--src``, a missing split list, a bad ``--split-map``) is one line on stderr,
exit status 2, and nothing is written.
"""
import json
import sys

from jax_abstain import files, validation
from jax_abstain.cli import common as cli


def _parser():
  from jax_abstain.data import mtsd  # pylint: disable=import-outside-toplevel
  p = cli.ArgumentParser(prog="jax-abstain-mtsd", description=__doc__.split("\n")[0])
  p.add_argument("--src", required=True, help="official MTSD folder")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--seed", type=int, default=0, help="seed of the eq. 16 slack draws")
  p.add_argument("--slack", type=float, default=mtsd.SLACK, help="lambda of eq. 16")
  p.add_argument("--split-map", default=mtsd.DEFAULT_SPLIT_MAP,
                 help="which MTSD split becomes which of ours (src=dst[,src=dst])")
  p.add_argument("--workers", type=int, default=1, help="processes decoding images")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def _convert(argv) -> dict:
  from absl import logging  # pylint: disable=import-outside-toplevel
  from jax_abstain.data import mtsd  # pylint: disable=import-outside-toplevel
  args = _parser().parse_args(argv)
  validation.check_int(args.workers, "--workers", minimum=1)
  validation.check_float(args.slack, "--slack", low=0.0)
  files.check_output(args.out, "--out", folder=True)
  logging.set_verbosity(logging.INFO)
  stats = mtsd.convert(args.src, args.out, seed=args.seed, split_map=args.split_map,
                       lam=args.slack, workers=args.workers)
  print(json.dumps(stats, indent=1))
  return stats


def main(argv=None) -> int:
  """The console script ``jax-abstain-mtsd`` (`common.entry`); 0 once the crops are written."""
  return cli.entry(_convert, argv)


if __name__ == "__main__":
  sys.exit(main())
