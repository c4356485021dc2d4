"""Per-sample evaluation reports: clean prediction plus attacks at several radii.

    cols = evaluate.evaluate_model(model, x, y, radii=["1/255", "2/255"], key=key,
                                   report_path=wd / "reports" / "era.csv")

Report columns (DESIGN.md): ``sample_idx,label,pred,is_acc,conf``, ``is_rob@<r>`` per attacked
radius, ``adv_conf@<r>`` per APGDconf radius. Robustness is label-free: the attack's label is
the model's own clean prediction F(x).

Work is re-used across radii by `attacks.robust_at_radii`: radii are attacked in increasing
order and a sample already broken at a smaller radius is not attacked again (the balls are
nested). Attack keys derive from ``fold_in(key, sample_idx)`` and the radius, so a sample's
result depends on neither the batch it lands in nor the other radii requested.
Chunks of ``batch_size`` samples are appended to the report as they finish; a killed run resumes
with the chunks that are missing.
"""
import functools
import pathlib
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from jax_abstain import attacks, data, metrics, models, radii as radii_lib, reports
from jax_abstain.attacks import common
from jax_abstain.attacks.multi_radius import pad_rows, radius_keys
from jax_abstain.errors import UserError


# APGDconf keys differ from APGD-CE keys at the same radius.
_CONF_TAG = zlib.crc32(b"apgd-conf") & 0x7FFFFFFF


class _Runner:
  """Jitted clean pass and attacks of one model; weights are jit arguments, compiled once."""

  def __init__(self, model, *, norm, n_iter, n_restarts):
    self.graphdef, self.state = nnx.split(model)
    self.norm, self.n_iter, self.n_restarts = norm, n_iter, n_restarts

  @functools.partial(jax.jit, static_argnums=0)
  def logits(self, state, x):
    return nnx.merge(self.graphdef, state)(x)

  @functools.partial(jax.jit, static_argnums=0)
  def clean(self, state, x):
    logits = nnx.merge(self.graphdef, state)(x)
    return jnp.argmax(logits, -1).astype(jnp.int32), jax.nn.softmax(logits, -1).max(-1)

  @functools.partial(jax.jit, static_argnums=(0, 6))
  def attack(self, state, x, y, keys, eps, loss):
    """x_adv [B, ...] and the max softmax at x_adv [B]; eps is [B] so radii share one compilation."""
    model = nnx.merge(self.graphdef, state)
    x_adv = attacks.apgd_run(model, x, y, key=keys, eps=eps, norm=self.norm, n_iter=self.n_iter,
                             n_restarts=self.n_restarts, loss=loss).x_adv
    return x_adv, jax.nn.softmax(model(x_adv), -1).max(-1)


def evaluate_model(model, x, y, *, radii, key, norm: str = "linf", n_iter: int = 40,
                   n_restarts: int = 1, conf_radii=(), batch_size: int = 500,
                   report_path=None, progress: bool = True, sample_idx=None) -> dict:
  """Evaluates `model` on (x, y) and returns (and optionally writes) the per-sample report.

  Args:
    model: NNX model in eval mode mapping x to logits.
    x: [N, ...] float32 in [0, 1]; y: [N] int labels.
    radii: radii for APGD-CE (strings like ``"1/255"`` or floats), any order.
    key: base key.
    norm: ``"linf"`` or ``"l2"``.
    n_iter, n_restarts: APGD budget (40 and 1 in the paper).
    conf_radii: radii for APGDconf; adds ``adv_conf@<r>`` (max softmax at the APGDconf point).
    batch_size: samples per chunk (one report flush per chunk).
    report_path: CSV to write (resumable through ``<path>.partial``); None keeps it in memory.
    sample_idx: [N] global sample indices (default 0..N-1), used for keys and the report.

  Returns:
    dict column name -> [N] array, in report column order.
  """
  common.validate_inputs(x, y, 1.0, "evaluate")
  norm = common.check_norm(norm)
  texts = sorted({radii_lib.format_radius(r) for r in radii}, key=radii_lib.parse_radius)
  conf_texts = [radii_lib.format_radius(r) for r in conf_radii]
  if not texts and not conf_texts:
    raise UserError("evaluate: give at least one radius")
  n = len(x)
  sample_idx = np.arange(n) if sample_idx is None else np.asarray(sample_idx)
  columns = list(reports.BASE_COLUMNS) + [f"is_rob@{t}" for t in texts] + [f"adv_conf@{t}" for t in conf_texts]
  runner = _Runner(model, norm=norm, n_iter=n_iter, n_restarts=n_restarts)
  base_key = key

  def run_chunk(lo, hi):
    xb, yb, ib = x[lo:hi], y[lo:hi], sample_idx[lo:hi]
    m = hi - lo
    pad = lambda a: pad_rows(a, batch_size)
    pred, conf = (np.asarray(v)[:m] for v in runner.clean(runner.state, jnp.asarray(pad(xb))))
    sample_keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(jnp.asarray(pad(ib)))
    row = {"sample_idx": ib, "label": yb, "pred": pred, "is_acc": pred == yb, "conf": conf}
    if texts:
      robust = attacks.robust_at_radii(
          functools.partial(runner.logits, runner.state), pad(xb), pad(pred), key=sample_keys,
          radii=[radii_lib.parse_radius(t) for t in texts], norm=norm,
          attack_fn=lambda xa, ya, keys, eps: runner.attack(runner.state, xa, ya, keys, eps, "ce")[0])
      for text in texts:
        row[f"is_rob@{text}"] = robust[radii_lib.parse_radius(text)][:m]
    for text in conf_texts:
      eps = radii_lib.parse_radius(text)
      keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(sample_keys, _CONF_TAG)
      keys = radius_keys(keys, eps)
      _, adv_conf = runner.attack(runner.state, jnp.asarray(pad(xb)), jnp.asarray(pad(pred)), keys,
                                     jnp.full((batch_size,), eps, jnp.float32), "conf")
      row[f"adv_conf@{text}"] = np.asarray(adv_conf)[:m]
    return row

  chunks = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
  if report_path is None:
    rows = [run_chunk(lo, hi) for lo, hi in tqdm(chunks, desc="evaluate", disable=not progress)]
    return {c: np.concatenate([r[c] for r in rows]) for c in columns}
  with reports.ReportWriter(report_path, columns, n) as writer:
    todo = [(lo, hi) for lo, hi in chunks if writer.todo(sample_idx[lo:hi])]
    for lo, hi in tqdm(todo, desc=f"evaluate {report_path.name if hasattr(report_path, 'name') else ''}",
                       disable=not progress):
      row = run_chunk(lo, hi)
      for j in range(hi - lo):
        if int(row["sample_idx"][j]) not in writer.done:
          writer.write({c: row[c][j] for c in columns})
      writer.flush()
  return reports.read_report(report_path)


def report_and_summarize(model, x, y, eval_config, workdir, name: str, sample_idx=None) -> dict:
  """Writes ``reports/<name>.csv`` for (x, y) and returns the summary at every radius.

  Args:
    model: NNX model in eval mode.
    x, y: evaluation inputs [N, ...] in [0, 1] and labels [N].
    eval_config: ``radii``, ``conf_radii``, ``norm``, ``n_iter``, ``n_restarts``,
      ``batch_size``, ``seed``.
    workdir: run folder.
    name: report name.
    sample_idx: [N] indices of the samples in their split (default 0..N-1).

  Returns:
    {"nat_acc", "n", "at": {radius: {rob_acc, rob_inacc, splits}}, "report"} (percent).
  """
  e = eval_config
  cols = evaluate_model(model, x, y, radii=list(e.radii), key=jax.random.key(e.seed), norm=e.norm,
                        n_iter=e.n_iter, n_restarts=e.n_restarts, conf_radii=list(e.conf_radii),
                        batch_size=e.batch_size, sample_idx=sample_idx,
                        report_path=pathlib.Path(workdir) / "reports" / f"{name}.csv")
  out = {"n": int(len(y)), "nat_acc": round(metrics.natural_accuracy(cols["is_acc"]), 2), "at": {},
         "report": f"reports/{name}.csv"}
  for text in (radii_lib.format_radius(r) for r in e.radii):
    s = metrics.summary(cols["is_acc"], cols[f"is_rob@{text}"])
    out["at"][text] = {"rob_acc": round(s["rob_acc"], 2), "rob_inacc": round(s["rob_inacc"], 2),
                       "splits": {k: round(v, 2) for k, v in s["splits"].items()}}
  return out


def check_labels(y, num_classes: int, what: str) -> None:
  if len(y) == 0:
    raise UserError(f"{what}: the data split is empty")
  if int(y.min()) < 0 or int(y.max()) >= num_classes:
    raise UserError(f"{what}: labels span {int(y.min())}..{int(y.max())} but the model has "
                    f"{num_classes} classes")


def format_summary(name: str, summary: dict) -> str:
  lines = [f"{name}: natural accuracy {summary['nat_acc']:.2f}% on {summary['n']} samples"]
  for radius, m in summary["at"].items():
    lines.append(f"  eps={radius:<8} rob_acc {m['rob_acc']:6.2f}  rob_inacc {m['rob_inacc']:6.2f}")
  return "\n".join(lines)


def run(config, workdir) -> dict:
  """Mode ``evaluate``: a saved or ported model (``config.model.dir``) on ``config.data``."""
  if not config.model.dir:
    raise UserError("config.model.dir: give the model directory, e.g. "
                    "--config=configs/evaluate.py:model=runs/mnist_std/model")
  model = models.load(config.model.dir)
  x, y, idx = data.load_from_config(config.data, config.data.split, config.data.eval_limit)
  check_labels(y, int(models.read_manifest(config.model.dir)["num_classes"]), "config.data")
  summary = report_and_summarize(model, x, y, config.eval, workdir, config.name, idx)
  results = {"model": str(config.model.dir), "data": config.data.name,
             "split": config.data.split, config.name: summary}
  reports.write_json(pathlib.Path(workdir) / "results.json", results)
  print(format_summary(config.name, summary))
  return results
