"""Writes a PNG grid of augmented examples: one row per example, the original then 8 copies.

    jax-abstain-augment --data digits --aug stdaug --out grid.png
    jax-abstain-augment --data cifar10 --path cifar-10-python.tar.gz --aug autoaugment --out aa.png
    python -m jax_abstain.cli.augment ...                       # the same command

The augmentations (``none``, ``crop_flip``, ``autoaugment``, ``crop_rotate``, ``stdaug``,
``stdaug_flip``) are those of `jax_abstain.data.augment`; the examples are spread evenly over
the split and every copy is seeded by (``--seed``, example, copy). Bad input (unknown data set
or augmentation, a set that is not images, an ``--out`` that is a folder) is one line on stderr,
exit status 2, and nothing is written.
"""
import sys

from jax_abstain import files
from jax_abstain.cli import common as cli
from jax_abstain.errors import UserError


def _parser():
  from jax_abstain.data import augment  # pylint: disable=import-outside-toplevel
  p = cli.ArgumentParser(prog="jax-abstain-augment", description=__doc__.split("\n")[0])
  p.add_argument("--data", default="digits", help="a jax_abstain.data name")
  p.add_argument("--path", default=None, help="path of the data set, if it needs one")
  p.add_argument("--split", default="train")
  p.add_argument("--aug", default="crop_flip", help=", ".join(sorted(augment.AUGMENTATIONS)))
  p.add_argument("--out", required=True, help="PNG file to write")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def _write_grid(argv) -> str:
  from jax_abstain import data  # pylint: disable=import-outside-toplevel
  from jax_abstain.data import augment  # pylint: disable=import-outside-toplevel
  args = _parser().parse_args(argv)
  augment.get(args.aug)   # an unknown name fails before the data is loaded
  files.check_output(args.out, "--out", overwrite=True)
  x, _ = data.load(args.data, args.split, path=args.path)
  if x.ndim != 4:
    raise UserError(f"--data {args.data}: not an image set (x has shape {x.shape})")
  augment.save_grid(x, args.aug, args.out, seed=args.seed)
  print(args.out)
  return args.out


def main(argv=None) -> int:
  """The console script ``jax-abstain-augment`` (`common.entry`); 0 once the PNG is written."""
  return cli.entry(_write_grid, argv)


if __name__ == "__main__":
  sys.exit(main())
