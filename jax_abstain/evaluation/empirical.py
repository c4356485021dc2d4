"""The empirical (attack) per-sample report of a model: clean prediction plus attacks at radii.

    from jax_abstain.evaluation import empirical
    cols = empirical.evaluate_model(model, x, y, radii=["1/255", "2/255"], key=key,
                                    report_path=wd / "reports" / "era.csv")
    cols = empirical.evaluate_model(model, x, y, radii=["8/255"], key=key, attack="autoattack")

Report columns (docs/design.md, Contracts): ``sample_idx,label,pred,is_acc,conf``,
``is_rob@<r>`` per attacked radius (from APGD-CE or, with ``attack="autoattack"``, from
AutoAttack; the column names do not change), ``adv_conf@<r>`` per APGDconf radius.
Robustness is label-free: the attack's label is the model's own clean prediction F(x).

Radii are attacked in increasing order by `attacks.robust_at_radii`; a sample broken at a
smaller radius is not attacked again (the balls are nested). Attack keys derive from
``fold_in(key, sample_idx)`` and the radius, so a sample's result depends on neither its batch
nor the other radii. Chunks of ``batch_size`` samples are appended to the report as they finish
(`runner.run_into_report`); a killed run resumes with the missing chunks. The settings (attack,
budget, key, samples, `runner.model_identity`) live in ``<report>.settings.json``: other
settings are refused, and a finished report with the same settings is re-used.
"""
import functools

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jax_abstain import radii as radii_lib, reports, validation
from jax_abstain.attacks import checks, common
from jax_abstain.attacks.multi_radius import pad_rows
from jax_abstain.evaluation import runner as runner_lib
from jax_abstain.errors import UserError


def evaluate_model(model, x, y, *, radii, key, norm: str = "linf", n_iter: int = 40,
                   n_restarts: int = 1, conf_radii=(), batch_size: int = 500,
                   report_path=None, progress: bool = True, sample_idx=None,
                   attack: str = "apgd-ce", aa_options=None) -> dict:
  """Evaluates `model` on (x, y) and returns (and optionally writes) the per-sample report.

  Args:
    model: NNX model mapping x to logits [B, C], C >= 2; it runs as an eval-mode copy
      whatever its mode and is never changed (docs/design.md, Contracts).
    x: [N, ...] float32 in [0, 1]; y: [N] int labels.
    radii: radii of the ``is_rob`` columns (strings like ``"1/255"`` or floats), any order.
    key: base key.
    norm: ``"linf"`` or ``"l2"``.
    n_iter, n_restarts: APGD budget (40 and 1 in the paper).
    conf_radii: radii for APGDconf; adds ``adv_conf@<r>`` (max softmax at the APGDconf point).
    batch_size: samples per device in one chunk (a chunk: ``batch_size`` times the local
      devices, split over them; one report flush per chunk). The report is byte-identical on
      any number of devices and hosts at the same `batch_size`; another `batch_size` may move
      the last digits of the confidences (XLA rounds other shapes differently).
    report_path: CSV to write (resumable through ``<path>.partial``); None keeps it in memory.
    sample_idx: [N] distinct global sample indices (default 0..N-1), for keys and the report.
    attack: ``"apgd-ce"`` (the paper's 40-step APGD) or ``"autoattack"``.
    aa_options: `attacks.autoattack` options, e.g. ``{"version": "standard"}``.

  Returns:
    dict column name -> [N] array, in report column order.

  Raises:
    UserError: bad inputs, labels outside 0..C-1, a model output that is not finite [B, C]
      logits, a forward pass that changes state, no radius at all, or a resume with other
      settings. A radius that covers the whole input box warns.
  """
  common.validate_inputs(x, y, 1.0, "evaluate")
  texts = sorted({radii_lib.format_radius(r) for r in radii}, key=radii_lib.parse_radius)
  conf_texts = [radii_lib.format_radius(r) for r in conf_radii]
  if not texts and not conf_texts:
    raise UserError("evaluate: give at least one radius")
  _check_model_and_radii(model, x, y, texts + conf_texts, norm)
  sample_idx = runner_lib.sample_indices(sample_idx, len(x))
  columns = (list(reports.BASE_COLUMNS) + [f"is_rob@{t}" for t in texts]
             + [f"adv_conf@{t}" for t in conf_texts])
  runner = runner_lib.ModelRunner(model, norm=norm, n_iter=n_iter, n_restarts=n_restarts,
                                  attack=attack, aa_options=aa_options)
  rows = runner.chunk_rows(batch_size)
  run_chunk = functools.partial(_chunk_columns, runner, x, y, sample_idx, key, texts,
                                conf_texts, rows)
  chunks = [np.arange(lo, min(lo + rows, len(x))) for lo in range(0, len(x), rows)]
  if report_path is None:
    rows = [run_chunk(pos) for pos in tqdm(chunks, desc="evaluate", disable=not progress)]
    return {c: np.concatenate([r[c] for r in rows]) for c in columns}
  settings = {"columns": columns, "attack": attack, "aa_options": dict(aa_options or {}),
              "norm": runner.norm, "n_iter": int(n_iter), "n_restarts": int(n_restarts),
              "key": runner_lib.key_identity(key), "model": runner_lib.model_identity(model),
              "samples": runner_lib.samples_identity(sample_idx)}
  return runner_lib.run_into_report(report_path, settings, columns, sample_idx, chunks,
                                    run_chunk, progress=progress)


def _check_model_and_radii(model, x, y, texts, norm) -> None:
  """Before any work: radii against the input box (a warning), the model as every attack takes
  it in (an eval-mode copy; finite logits [B, C], `validation.inference_model`), labels in
  0..C-1 (a label C or above would make every sample silently inaccurate), and AutoAttack-style
  warnings (probability outputs, zero gradients) on the first 16 samples."""
  norm = common.check_norm(norm)
  for text in dict.fromkeys(texts):
    validation.check_radius_in_box(radii_lib.parse_radius(text), norm,
                                   int(np.prod(np.shape(x)[1:])), f"evaluate: radius {text}")
  x16 = jnp.asarray(x[:16])
  model_copy, out = validation.inference_model(model, x16, name="evaluate: model")
  n_classes = validation.check_logits(out, n=len(x16), name="evaluate: model")
  validation.check_labels(y, n=len(x), num_classes=n_classes, name="evaluate: y")
  clean16 = model_copy(x16)
  validation.check_logits(clean16, n=len(x16), name="evaluate: model")
  checks.run_all(model_copy, x16, jnp.argmax(clean16, -1))


def _chunk_columns(runner, x, y, sample_idx, key, texts, conf_texts, rows, pos) -> dict:
  """The report columns of the samples at positions `pos`, run as one batch padded to `rows`
  (every chunk re-uses one compilation; the batch is split over the devices,
  `runner.ModelRunner`)."""
  m = len(pos)
  pad = lambda a: pad_rows(a, rows)
  xb, ib = pad(x[pos]), sample_idx[pos]
  pred, conf = (v[:m] for v in runner.predict(xb))
  keys = runner_lib.sample_keys(key, pad(ib))
  row = {"sample_idx": ib, "label": y[pos], "pred": pred, "is_acc": pred == y[pos], "conf": conf}
  if texts:
    for text, rob in runner.robust(xb, pad(pred), keys, texts, valid=m).items():
      row[f"is_rob@{text}"] = rob[:m]
  for text in conf_texts:
    row[f"adv_conf@{text}"] = runner.adv_conf(xb, pad(pred), keys, text)[:m]
  return row
