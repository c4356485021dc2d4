"""Certify a saved or ported model on a data split (randomized smoothing, CERTIFY).

    python -m jax_abstain.cli.certify --model runs/mnist_std/model --data mnist5k --limit 500 \
        --sigma 0.25 --n 10000 --out runs/cert/std.csv --eps 0.25 0.5 --json runs/cert/std.json

Writes the certified per-sample report ``--out`` (columns
``sample_idx,label,pred,is_acc,conf,cert_pred,radius``, one row flushed per sample; a rerun
with the same arguments resumes a killed run) through `evaluation.evaluate` with an
``EvalConfig(kind="certified")``, the path the evaluate and train jobs take as well
(docs/design.md, Decisions). Prints and (``--json``) writes the summary at the L2 radii
``--eps``. Every argument is checked before any work; bad input prints one line and exits 2
(``--debug`` shows the traceback).
"""
import sys

from jax_abstain import files, validation
from jax_abstain.cli import common as cli

# EvalConfig fields and the flags that set them, for the messages.
_FLAGS = {"sigma": "--sigma", "n0": "--n0", "n": "--n", "alpha": "--alpha",
          "noise_batch_size": "--batch-size", "seed": "--seed", "radii": "--eps"}


def _parser():
  p = cli.ArgumentParser(prog="python -m jax_abstain.cli.certify",
                         description=__doc__.split("\n")[0])
  p.add_argument("--model", required=True, help="model directory (models.save or port)")
  p.add_argument("--data", required=True, help="data set name, e.g. mnist5k, cifar10")
  p.add_argument("--path", default="", help="where the data lives (archive, folder)")
  p.add_argument("--split", default="test")
  p.add_argument("--limit", type=int, default=0, help="evenly spaced samples (0 = all)")
  p.add_argument("--sigma", type=float, required=True, help="noise level of the smoothing")
  p.add_argument("--n0", type=int, default=100, help="selection draws (paper: 100)")
  p.add_argument("--n", type=int, default=100_000, help="estimation draws (paper: 100 000)")
  p.add_argument("--alpha", type=float, default=0.001, help="failure probability (0.001)")
  p.add_argument("--batch-size", type=int, default=1000, help="noisy copies per forward pass")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", required=True, help="per-sample report CSV (resumable)")
  p.add_argument("--eps", nargs="*", default=(), help="L2 radii to summarise, e.g. 0.25 0.5")
  p.add_argument("--json", default=None, help="write the summary here")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def certify(argv) -> dict:
  """Certifies ``--model`` on ``--data``; returns the summary (with ``"report": --out``).

  Raises:
    UserError: a bad argument (before anything is written), labels outside the model's
      classes, or a report started with other settings.
  """
  from jax_abstain.evaluation import EvalConfig  # pylint: disable=import-outside-toplevel
  args = _parser().parse_args(argv)
  files.check_file(args.model, "model", "--model")
  validation.check_int(args.limit, "--limit", minimum=0)
  cfg = EvalConfig.from_config(
      {"kind": "certified", "radii": list(args.eps), "sigma": args.sigma, "n0": args.n0,
       "n": args.n, "alpha": args.alpha, "noise_batch_size": args.batch_size,
       "seed": args.seed}, name="certify", labels=_FLAGS)
  out = files.check_output(args.out, "--out", overwrite=True)
  if args.json:
    files.check_output(args.json, "--json", overwrite=True)
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jax_abstain import data, evaluation, models  # pylint: disable=import-outside-toplevel
  from jax_abstain.evaluation import summary as summary_lib  # pylint: disable=import-outside-toplevel
  data_config = ml_collections.ConfigDict({"name": args.data, "path": args.path,
                                           "split": args.split, "eval_limit": args.limit})
  x, y, idx = data.load_from_config(data_config, args.split, args.limit)
  summary_lib.check_labels(y, int(models.read_manifest(args.model)["num_classes"]), "--data")
  model = models.load(args.model)
  result = {"report": str(out), **evaluation.evaluate(model, x, y, cfg, report_path=out,
                                                      sample_idx=idx)}
  print(summary_lib.format_summary(str(out), result))
  if args.json:
    files.write_json(args.json, result)
  return result


def main(argv=None) -> int:
  """Console script ``jax-abstain-certify``: exit 0, or 2 and one line per problem."""
  return cli.entry(certify, argv)


if __name__ == "__main__":
  sys.exit(main())
