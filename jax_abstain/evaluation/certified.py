"""The certified per-sample report of a model (CERTIFY on every sample) and its metrics.

    from jax_abstain.evaluation import certified
    cols = certified.certify_report(model, x, y, "runs/cert.csv", key=jax.random.key(0),
                                    sigma=0.12, n0=100, n=100_000, alpha=0.001)
    cols["cert_pred"], cols["radius"]                   # [N] each, radius in L2
    certified.summarize(cols, 0.25)                     # cert_acc, cert_inacc, commit_rate, ...

The report has the columns ``sample_idx,label,pred,is_acc,conf,cert_pred,radius``: ``pred``,
``is_acc`` and ``conf`` (max softmax) come from the base model's clean prediction F(x);
``cert_pred`` (-1 = abstain) and ``radius`` (L2) from `smoothing.certify`. Samples are
certified ``batch_size // 100`` at a time on each local device and their rows flushed together (`runner.run_into_report`); a killed
run started again with the same arguments certifies only the missing samples and, because
draw j's noise comes from ``fold_in(fold_in(key, stream), j)`` whatever the batch
(`smoothing`), yields the same report as an uninterrupted run, on any number of devices or
hosts. The settings (sigma, n0, n, alpha, key, the noise scheme, samples,
`runner.model_identity`) are stored next to the report in ``<report>.settings.json``; a run
with different settings refuses to resume. ``batch_size`` is not a setting: it does not change
the result. The command line is `jax_abstain.cli.certify`.
"""
import functools

import jax
import numpy as np
from flax import nnx

from jax_abstain import devices, radii, reports, smoothing, soundness, validation
from jax_abstain.attacks.multi_radius import pad_rows
from jax_abstain.evaluation import runner as runner_lib

COLUMNS = reports.BASE_COLUMNS + ("cert_pred", "radius")
# The noise scheme in the settings: reports of the earlier per-sample noise are not resumed.
NOISE = "draw j: fold_in(fold_in(key, stream), j), shared by the samples"


def certify_report(model, x, y, path, *, key, sigma: float, n0: int = 100,
                   n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
                   indices=None, progress: bool = True) -> dict:
  """Certifies every input and writes (or completes) the per-sample report at `path`.

  Args:
    model: an NNX module or a callable ``[M, ...] -> [M, C]`` logits, C >= 2; a module runs
      as an eval-mode copy whatever its mode and is never changed (docs/design.md, Contracts).
    x: [N, ...] inputs in [0, 1]; y: [N] int labels.
    path: CSV path of the report (``<path>.partial`` while unfinished).
    key: PRNG key of the noise (`smoothing`: draw j is shared by the samples).
    sigma, n0, n, alpha, batch_size: as in `smoothing.certify` (paper: 100, 100 000, 0.001);
      ``batch_size`` noisy copies per forward pass.
    indices: [N] distinct sample indices written as ``sample_idx`` (default ``0..N-1``), e.g.
      positions in the test set when only a subset (the authors' first 500) is certified.
    progress: show a tqdm progress bar.

  Returns:
    The finished report's columns (name -> [N] array), as `reports.read_report` gives them.

  Raises:
    UserError: bad inputs or settings, labels outside 0..C-1, a model output that is not
      finite [M, C] logits, a forward pass that changes state, or a resume with other settings
      (or another model: the settings hold `runner.model_identity`).
  """
  smoothing.check_args(sigma=sigma, alpha=alpha, n0=n0, n=n, batch_size=batch_size)
  x = smoothing.check_inputs(x)
  run_model, out = validation.inference_model(model, x[:1], name="certify: model")
  n_classes = validation.check_logits(out, n=len(x[:1]), name="certify: model")
  y = validation.check_labels(y, n=len(x), num_classes=n_classes, name="y")
  indices = runner_lib.sample_indices(indices, len(x))
  settings = {"sigma": float(sigma), "n0": int(n0), "n": int(n), "alpha": float(alpha),
              "key": runner_lib.key_identity(key), "samples": runner_lib.samples_identity(indices),
              "model": runner_lib.model_identity(model), "columns": list(COLUMNS),
              "noise": NOISE}
  certify = functools.partial(smoothing.certify, run_model, key=key, sigma=sigma, n0=n0, n=n,
                              alpha=alpha, batch_size=batch_size)
  run_chunk = functools.partial(_certify_chunk, _clean_fn(run_model), certify, x, y, indices)
  group = smoothing.images_per_device(batch_size) * devices.local_mesh().size
  chunks = [np.arange(lo, min(lo + group, len(x))) for lo in range(0, len(x), group)]
  run_chunk = functools.partial(run_chunk, group)
  return runner_lib.run_into_report(path, settings, COLUMNS, indices, chunks, run_chunk,
                                    progress=progress)


def _clean_fn(model):
  """x [B, ...] -> (pred [B], max softmax [B]) of the base model, jitted."""
  if isinstance(model, nnx.Module):
    return runner_lib.ModelRunner(model).predict
  probs_fn = jax.jit(lambda z: jax.nn.softmax(model(z), -1))
  mesh = devices.local_mesh()

  def clean(z):   # z: a multiple of the devices, split over them like the NNX runner's
    probs = np.asarray(probs_fn(devices.split_rows(mesh, z)))
    validation.check_logits(probs, n=len(z), name="certify: model")  # NaN logits: NaN probs
    return probs.argmax(-1), probs.max(-1)
  return clean


def _certify_chunk(clean, certify, x, y, indices, group, pos) -> dict:
  """The report columns of the samples at positions `pos`: the clean pass and CERTIFY on a
  batch padded to `group` rows (the same shapes on every chunk and any number of devices)."""
  m = len(pos)
  pred, conf = (v[:m] for v in clean(pad_rows(x[pos], group)))
  # Whole groups: every device certifies the same number of inputs on any number of devices.
  cert_pred, radius = soundness.check_certificates(
      *(v[:m] for v in certify(pad_rows(x[pos], group), indices=pad_rows(indices[pos], group))))
  return {"sample_idx": indices[pos], "label": y[pos], "pred": pred, "is_acc": pred == y[pos],
          "conf": conf, "cert_pred": cert_pred, "radius": radius}


def summarize(columns: dict, eps, *, linf_dim=None) -> dict:
  """Certified metrics at radius eps from a certified report (docs/design.md, appendix A5).

  Args:
    columns: report columns (`reports.read_report`).
    eps: radius (L2; with `linf_dim` = d, an L-inf radius compared with ``R / sqrt(d)``).

  Returns:
    Percentages (unrounded floats): ``cert_acc`` (cert_pred == y and R >= eps),
    ``cert_inacc`` (robust inaccuracy: cert_pred not in {y, -1} and R >= eps),
    ``commit_rate`` (R >= eps, i.e. R_rob^sel of the S_CRI abstain model), ``commit_prec``
    (cert_acc / commit_rate, 0 when nothing is committed), and ``nat_acc`` of the base model.

  Raises:
    UserError: a bad radius, or a report with a radius for an abstention.
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


__all__ = ["COLUMNS", "certify_report", "summarize"]
