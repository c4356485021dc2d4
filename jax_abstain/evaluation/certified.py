"""Certified evaluation: a resumable per-sample report of CERTIFY on a test set.

    from jax_abstain.evaluation import certified as certification
    cols = certification.certify_report(logits_fn, x, y, "runs/cert.csv", key=jax.random.key(0),
                                        sigma=0.12, n0=100, n=100_000, alpha=0.001)
    cols["cert_pred"], cols["radius"]                   # [N] each, radius in L2

The report has the columns ``sample_idx,label,pred,is_acc,conf,cert_pred,radius``: ``pred``,
``is_acc`` and ``conf`` (max softmax) come from the base model's clean prediction F(x);
``cert_pred`` (-1 = abstain) and ``radius`` (L2) from `smoothing.certify`. Rows are flushed
after every sample through `reports.ReportWriter`; a killed run started again with the same
arguments certifies only the missing samples and, because every example draws its noise from
``fold_in(key, sample_idx)``, yields the same report as an uninterrupted run. The settings
(sigma, n0, n, alpha, key, sample indices, model tag) are stored next to the report in
``<report>.settings.json``; a run with different settings refuses to resume. ``batch_size``
is not a setting: it does not change the result.

Command line (a saved or ported model on a data set; resumable, one-line errors, exit 2):
    python -m jax_abstain.certification --model runs/mnist_std/model --data mnist5k --limit 500 \
        --sigma 0.25 --n 10000 --out runs/cert/std.csv --eps 0.25 0.5 --json runs/cert/std.json
"""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_abstain import files, radii, reports, smoothing, soundness, validation
from jax_abstain.errors import UserError

COLUMNS = reports.BASE_COLUMNS + ("cert_pred", "radius")


settings_path = reports.settings_path


def _key_data(key) -> list:
  if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.asarray(key).ravel().tolist()


def _clean_predictions(logits_fn, x, batch_size):
  """Base-model predictions and max-softmax confidences on the clean inputs, [N] each."""
  if isinstance(logits_fn, nnx.Module):
    graphdef, state = nnx.split(logits_fn)
    probs_fn = jax.jit(lambda s, z: jax.nn.softmax(nnx.merge(graphdef, s)(z), -1))
    call = lambda z: probs_fn(state, z)
  else:
    call = jax.jit(lambda z: jax.nn.softmax(logits_fn(z), -1))
  probs = np.concatenate([np.asarray(call(jnp.asarray(x[s:s + batch_size])))
                          for s in range(0, len(x), batch_size)])
  return probs.argmax(-1), probs.max(-1)


def certify_report(logits_fn, x, y, path, *, key, sigma: float, n0: int = 100,
                   n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
                   indices=None, model_tag: str = "", progress: bool = True) -> dict:
  """Certifies every input and writes (or completes) the per-sample report at `path`.

  Args:
    logits_fn: callable ``[M, ...] -> [M, C]`` logits, or an NNX module (eval mode).
    x: [N, ...] inputs in [0, 1]; y: [N] int labels.
    path: CSV path of the report (``<path>.partial`` while unfinished).
    key: PRNG key; sample i draws its noise from ``fold_in(key, sample_idx_i)``.
    sigma, n0, n, alpha, batch_size: as in `smoothing.certify` (paper: 100, 100 000, 0.001).
    indices: [N] sample indices written as ``sample_idx`` (default ``0..N-1``), e.g. positions
      in the test set when only a subset (the authors' first 500) is certified.
    model_tag: any string identifying the model (a checkpoint path or hash); part of the
      settings, so a report is never completed with another model's results.
    progress: show a tqdm progress bar.

  Returns:
    The finished report's columns (name -> [N] array), as `reports.read_report` gives them.
  """
  smoothing.check_args(sigma=sigma, alpha=alpha, n0=n0, n=n, batch_size=batch_size)
  x = smoothing.check_inputs(x)
  y = validation.check_labels(y, n=len(x), name="y")
  indices = np.arange(len(x)) if indices is None else np.asarray(indices, np.int64)
  if indices.shape != (len(x),) or len(set(indices.tolist())) != len(x):
    raise UserError(f"indices: expected {len(x)} distinct sample indices")
  settings = {"sigma": float(sigma), "n0": int(n0), "n": int(n), "alpha": float(alpha),
              "key": _key_data(key), "indices": indices.tolist(), "model_tag": str(model_tag),
              "columns": list(COLUMNS)}
  reports.check_settings(path, settings)
  if pathlib.Path(path).exists():
    return reports.read_report(path)
  with reports.ReportWriter(path, COLUMNS, len(x)) as writer:
    todo = set(writer.todo(indices))
    positions = [p for p, i in enumerate(indices) if int(i) in todo]
    if positions:
      pred, conf = _clean_predictions(logits_fn, x[positions], batch_size)
      bar = _progress(len(positions), len(x) - len(positions), progress)
      for p, pr, cf in zip(positions, pred, conf):
        cert_pred, radius = soundness.check_certificates(*smoothing.certify(
            logits_fn, x[p:p + 1], key=key, sigma=sigma, n0=n0, n=n, alpha=alpha,
            batch_size=batch_size, indices=indices[p:p + 1]))
        writer.write({"sample_idx": int(indices[p]), "label": int(y[p]), "pred": int(pr),
                      "is_acc": int(pr == y[p]), "conf": float(cf),
                      "cert_pred": int(cert_pred[0]), "radius": float(radius[0])})
        writer.flush()
        bar.update(1)
      bar.close()
  return reports.read_report(path)


def _progress(total, initial, enabled):
  try:
    from tqdm import tqdm
  except ImportError:
    enabled = False
  if not enabled:
    class _Null:
      def update(self, _):
        pass

      def close(self):
        pass
    return _Null()
  return tqdm(total=total + initial, initial=initial, desc="certify", unit="sample")


def summarize(columns: dict, eps, *, linf_dim=None) -> dict:
  """Certified metrics at radius eps from a certified report (reference file, section 5).

  Args:
    columns: report columns (`reports.read_report`).
    eps: radius (L2; with `linf_dim` = d, an L-inf radius compared with ``R / sqrt(d)``).

  Returns:
    Percentages: ``cert_acc`` (cert_pred == y and R >= eps), ``cert_inacc`` (robust
    inaccuracy: cert_pred not in {y, -1} and R >= eps), ``commit_rate`` (R >= eps, i.e.
    R_rob^sel of the S_CRI abstain model), ``commit_prec`` (cert_acc / commit_rate), and
    ``nat_acc`` of the base model.
  """
  eps = radii.parse_radius(eps, name="eps")
  soundness.check_certificates(columns["cert_pred"], columns["radius"], name="report",
                                user_input=True)
  radius = np.asarray(columns["radius"], float)
  if linf_dim is not None:
    radius = smoothing.linf_radius(radius, (linf_dim,))
  cert_pred, label = np.asarray(columns["cert_pred"]), np.asarray(columns["label"])
  committed = (cert_pred >= 0) & (radius >= eps)
  acc = committed & (cert_pred == label)
  rate = 100.0 * committed.mean()
  prec = 100.0 * acc.sum() / committed.sum() if committed.any() else 0.0
  return {"cert_acc": float(100.0 * acc.mean()),
          "cert_inacc": float(100.0 * (committed & ~acc).mean()),
          "commit_rate": float(rate), "commit_prec": float(prec),
          "nat_acc": float(100.0 * np.mean(columns["is_acc"]))}


def _parser():
  from jax_abstain.cli import common as cli  # pylint: disable=import-outside-toplevel
  p = cli.ArgumentParser(prog="python -m jax_abstain.certification",
                         description=__doc__.split("\n")[0])
  p.add_argument("--model", required=True, help="model directory (models.save or port)")
  p.add_argument("--data", required=True, help="data set name, e.g. mnist5k, cifar10")
  p.add_argument("--path", default="", help="where the data lives (archive, folder)")
  p.add_argument("--split", default="test")
  p.add_argument("--limit", type=int, default=0, help="evenly spaced samples (0 = all)")
  p.add_argument("--sigma", type=float, required=True, help="noise level of the smoothing")
  p.add_argument("--n0", type=int, default=100)
  p.add_argument("--n", type=int, default=100_000)
  p.add_argument("--alpha", type=float, default=0.001)
  p.add_argument("--batch-size", type=int, default=1000)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", required=True, help="per-sample report CSV (resumable)")
  p.add_argument("--eps", nargs="*", default=(), help="L2 radii to summarise, e.g. 0.25 0.5")
  p.add_argument("--json", default=None, help="write the summaries here")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def main(argv) -> dict:
  """Certifies a model directory on a data split; every argument is checked before any work."""
  args = _parser().parse_args(argv)
  files.check_file(args.model, "model", "--model")
  validation.check_sigma(args.sigma, "--sigma")
  validation.check_alpha(args.alpha, "--alpha")
  for name in ("n0", "n", "batch_size"):
    validation.check_int(getattr(args, name), f"--{name.replace('_', '-')}")
  validation.check_int(args.limit, "--limit", minimum=0)
  validation.check_int(args.seed, "--seed", minimum=0)
  validation.check_radii(args.eps, "--eps", allow_empty=True)
  out = files.check_output(args.out, "--out", overwrite=True)
  if args.json:
    files.check_output(args.json, "--json", overwrite=True)
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jax_abstain import data, models  # pylint: disable=import-outside-toplevel
  manifest = models.read_manifest(args.model)
  data_config = ml_collections.ConfigDict({"name": args.data, "path": args.path})
  x, y, idx = data.load_from_config(data_config, args.split, args.limit)
  validation.check_labels(y, num_classes=int(manifest["num_classes"]), name="--data labels")
  model = models.load(args.model)
  cols = certify_report(model, x, y, out, key=jax.random.key(args.seed), sigma=args.sigma,
                        n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                        indices=idx, model_tag=manifest["weights"]["sha256"])
  result = {"report": str(out), "n": int(len(y)),
            "at": {t: summarize(cols, t) for t in (radii.format_radius(e) for e in args.eps)}}
  print(f"certified {len(y)} samples -> {out}")
  for text, m in result["at"].items():
    print(f"  eps={text:<8} cert_acc {m['cert_acc']:6.2f}  cert_inacc {m['cert_inacc']:6.2f}  "
          f"commit_rate {m['commit_rate']:6.2f}")
  if args.json:
    files.write_json(args.json, result)
  return result


__all__ = ["COLUMNS", "certify_report", "main", "settings_path", "summarize"]


if __name__ == "__main__":
  import sys  # pylint: disable=import-outside-toplevel
  from jax_abstain.cli import common as cli  # pylint: disable=import-outside-toplevel
  cli.run_with_clean_errors(main, sys.argv[1:])
