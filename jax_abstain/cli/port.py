"""Port a PyTorch checkpoint to a JAX model directory, or export one back to PyTorch.

    jax-abstain-port --arch Carmon2019Unlabeled --checkpoint carmon.pt --out ported/carmon
    jax-abstain-port --arch cifar-resnet110 --checkpoint noise_0.25.pth.tar --out ported/r110
    jax-abstain-port --export ported/carmon --out finetuned.pt     # JAX -> torch
    jax-abstain-port --robustbench Carmon2019Unlabeled             # by RobustBench name
    jax-abstain-port --robustbench Gowal2020Uncovering --dataset cifar100 --out ported/g100
    jax-abstain-port --list [--dataset cifar10] [--threat-model Linf]  # what loads, and how

(``python -m jax_abstain.cli.port`` is the same command.) NAME is a RobustBench model name or
an architecture id (``--list`` prints them). The output directory loads with
``jax_abstain.models.load(DIR)``. ``--robustbench NAME`` downloads RobustBench's checkpoint,
ports it, checks it against RobustBench's module and caches it
(`jax_abstain.porting.robustbench`); ``--out`` then also writes a model directory there. Any problem (unknown name, missing or unreadable file, a
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
  p.add_argument("--robustbench", metavar="NAME", help="RobustBench model name to download and port")
  p.add_argument("--dataset", default=None, help="cifar10 (default) or cifar100, with "
                 "--robustbench or --list")
  p.add_argument("--threat-model", default=None, help="Linf (default) or L2, with "
                 "--robustbench or --list")
  p.add_argument("--model-dir", default=None, help="checkpoint and port cache for "
                 "--robustbench (default: $JAX_ABSTAIN_CACHE/models/robustbench)")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def main(argv=None) -> int:
  """The console script ``jax-abstain-port`` (`common.entry`); 0 once written."""
  return cli.entry(_port, argv)


def _port(argv) -> int:
  args = _parser().parse_args(argv)
  from jax_abstain import porting  # pylint: disable=import-outside-toplevel
  from jax_abstain.porting import listing  # pylint: disable=import-outside-toplevel
  if args.list:
    print(listing.render(args.dataset, args.threat_model))
    return 0
  if args.export:
    return _export(args)
  if args.robustbench:
    return _robustbench(args)
  missing = [f"--{k}" for k in ("arch", "checkpoint", "out") if not getattr(args, k)]
  if missing:
    raise UserError(f"missing {', '.join(missing)}; usage: jax-abstain-port "
                    "--arch NAME --checkpoint FILE.pt --out DIR (or --robustbench NAME)")
  files.check_file(args.checkpoint, "checkpoint", "--checkpoint")
  _check_out_folder(args)
  if args.num_classes is not None:
    validation.check_int(args.num_classes, "--num-classes", minimum=2)
  start = time.time()
  extra = {} if args.num_classes is None else {"num_classes": args.num_classes}
  out = porting.port(args.arch, args.checkpoint, args.out, overwrite=args.overwrite, **extra)
  print(f"ported {args.checkpoint} as {args.arch} -> {out} ({time.time() - start:.1f}s)")
  return 0


def _check_out_folder(args):
  out = files.check_output(args.out, "--out", folder=True)
  if out.is_dir() and any(out.iterdir()) and not args.overwrite:
    raise UserError(f"--out: {out} is not empty; pass --overwrite to replace it, or choose "
                    "another folder")


def _export(args) -> int:
  from jax_abstain import models, porting  # pylint: disable=import-outside-toplevel
  if not args.out:
    raise UserError("--export needs --out FILE.pt")
  files.check_file(args.export, "model", "--export")
  out = files.check_output(args.out, "--out", overwrite=True)
  if out.is_file() and not args.overwrite:
    raise UserError(f"--out: {out} exists; pass --overwrite to replace it, or choose another "
                    "name")
  model = models.load(args.export)
  counters = (models.read_manifest(args.export).get("source") or {}).get("num_batches_tracked")
  path = porting.export_state_dict(model, out, counters=counters)
  print(f"wrote {path}")
  return 0


def _robustbench(args) -> int:
  from jax_abstain import models  # pylint: disable=import-outside-toplevel
  from jax_abstain.porting import robustbench  # pylint: disable=import-outside-toplevel
  dataset, threat = args.dataset or "cifar10", args.threat_model or "Linf"
  row = robustbench.entry(args.robustbench, dataset, threat)
  if robustbench.status(row) != "native":
    raise UserError(robustbench.refusal(row))
  if args.out:
    _check_out_folder(args)
  start = time.time()
  net = models.load_robustbench(args.robustbench, dataset, threat, args.model_dir)
  folder = robustbench.folder(row, args.model_dir) / f"{row['name']}.jax"
  manifest = models.read_manifest(folder)
  rb = manifest["source"]["robustbench"]
  parity = rb["parity"]
  checked = (f"max |logit difference| {parity['max_abs_diff']:.2g} with logits up to "
             f"{parity['max_abs_logit']:.3g} against RobustBench's module" if parity["checked"]
             else f"parity not checked: {parity['why']}")
  if args.out:
    models.save(net, args.out, arch=manifest["architecture"], options=manifest["options"],
                source=manifest["source"], overwrite=args.overwrite)
    folder = args.out
  print(f"{row['name']} ({dataset} {threat}) -> {folder} ({checked}; "
        f"{time.time() - start:.1f}s)")
  return 0

if __name__ == "__main__":
  sys.exit(main())
