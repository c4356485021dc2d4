"""Port a PyTorch checkpoint to a JAX model directory, or export one back to PyTorch.

    jax-abstain-port --arch Carmon2019Unlabeled --checkpoint carmon.pt --out ported/carmon
    jax-abstain-port --arch cifar-resnet110 --checkpoint noise_0.25.pth.tar --out ported/r110
    jax-abstain-port --export ported/carmon --out finetuned.pt     # JAX -> torch
    jax-abstain-port --list                                        # known names

(``python -m jax_abstain.cli.port`` is the same command.) NAME is a RobustBench model name or
an architecture id (``--list`` prints them). The output directory loads with
``jax_abstain.models.load(DIR)``. Any problem (unknown name, missing or unreadable file, a
checkpoint of another architecture) is one line on stderr, exit status 2, and nothing is
written to the output.
"""
import sys
import time

from jax_abstain import files, validation
from jax_abstain.cli import common as cli
from jax_abstain.errors import UserError


def _parser():
  p = cli.ArgumentParser(prog="jax-abstain-port", description=__doc__.split("\n")[0])
  p.add_argument("--arch", help="RobustBench model name or architecture id")
  p.add_argument("--checkpoint", help="PyTorch checkpoint (.pt/.pth/.tar or .safetensors)")
  p.add_argument("--out", help="output model directory (or .pt file with --export)")
  p.add_argument("--num-classes", type=int, default=None, help="override the number of classes")
  p.add_argument("--export", metavar="DIR", help="export model directory DIR to a torch state_dict")
  p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
  p.add_argument("--list", action="store_true", help="print the known names and exit")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def main(argv=None) -> int:
  """The console script ``jax-abstain-port`` (`common.entry`); 0 once written."""
  return cli.entry(_port, argv)


def _port(argv) -> int:
  args = _parser().parse_args(argv)
  from jax_abstain import models, porting  # pylint: disable=import-outside-toplevel
  if args.list:
    for name in models.names():
      meta = models.get(name).metadata
      print(f"{name:40s} {meta.get('family', '')}  {meta.get('dataset', '')}  "
            f"{meta.get('threat_model') or ''}")
    return 0
  if args.export:
    if not args.out:
      raise UserError("--export needs --out FILE.pt")
    files.check_file(args.export, "model", "--export")
    files.check_output(args.out, "--out", overwrite=True)
    model = models.load(args.export)
    path = porting.export_state_dict(model, args.out)
    print(f"wrote {path}")
    return 0
  missing = [f"--{k}" for k in ("arch", "checkpoint", "out") if not getattr(args, k)]
  if missing:
    raise UserError(f"missing {', '.join(missing)}; usage: jax-abstain-port "
                    "--arch NAME --checkpoint FILE.pt --out DIR")
  files.check_file(args.checkpoint, "checkpoint", "--checkpoint")
  files.check_output(args.out, "--out", folder=True)
  if args.num_classes is not None:
    validation.check_int(args.num_classes, "--num-classes", minimum=2)
  start = time.time()
  extra = {} if args.num_classes is None else {"num_classes": args.num_classes}
  out = porting.port(args.arch, args.checkpoint, args.out, overwrite=args.overwrite, **extra)
  print(f"ported {args.checkpoint} as {args.arch} -> {out} ({time.time() - start:.1f}s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
