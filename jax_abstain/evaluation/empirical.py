"""Per-sample evaluation reports: clean prediction plus attacks at several radii, certification.

    cols = evaluate.evaluate_model(model, x, y, radii=["1/255", "2/255"], key=key,
                                   report_path=wd / "reports" / "era.csv")
    cols = evaluate.evaluate_model(model, x, y, radii=["8/255"], key=key, attack="autoattack")
    comp = evaluate.evaluate_composition([era, std], x, y, eps="1/255", key=key)   # live H

Report columns (DESIGN.md): ``sample_idx,label,pred,is_acc,conf``, ``is_rob@<r>`` per attacked
radius (from APGD-CE or, with ``attack="autoattack"``, from AutoAttack; the column names do not
change), ``adv_conf@<r>`` per APGDconf radius; a certified evaluation (`certify_and_summarize`)
writes ``cert_pred,radius`` instead. Robustness is label-free: the attack's label is the
model's own clean prediction F(x).

Radii are attacked in increasing order by `attacks.robust_at_radii`; a sample broken at a
smaller radius is not attacked again (the balls are nested). Attack keys derive from
``fold_in(key, sample_idx)`` and the radius, so a sample's result depends on neither its batch
nor the other radii. Chunks of ``batch_size`` samples are appended to the report as they finish
(tqdm shows the progress); a killed run resumes with the missing chunks. The settings (attack,
budget, key, samples, a hash of the weights) live in ``<report>.settings.json``: other settings
are refused, and a finished report with the same settings is re-used.
"""
import dataclasses
import functools
import hashlib
import pathlib
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from jax_abstain import attacks, data, files, metrics, models, reports
from jax_abstain import radii as radii_lib
from jax_abstain.attacks import checks, common
from jax_abstain.attacks.multi_radius import pad_rows, radius_keys
from jax_abstain.errors import UserError

ATTACKS = ("apgd-ce", "autoattack")
# APGDconf keys differ from APGD-CE keys at the same radius.
_CONF_TAG = zlib.crc32(b"apgd-conf") & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class _Program:
  """The jitted functions of one architecture and attack budget.

  Hashable by value, so every model with the same graph (e.g. the points of a beta sweep)
  shares one compilation; it holds no weights, so the jit cache keeps no model alive.
  """
  graphdef: object
  norm: str
  n_iter: int
  n_restarts: int

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


class ModelRunner:
  """Clean pass and attacks of one model, jitted with the weights as arguments.

  Args:
    model: NNX model in eval mode.
    norm: ``"linf"`` or ``"l2"``.
    n_iter, n_restarts: APGD budget (40 and 1 in the paper).
    attack: ``"apgd-ce"`` or ``"autoattack"`` for the ``is_rob`` columns.
    aa_options: `attacks.autoattack` options (``version``, ``n_iter``, ``attacks_to_run``, ...).
  """

  def __init__(self, model, *, norm="linf", n_iter=40, n_restarts=1, attack="apgd-ce",
               aa_options=None):
    if attack not in ATTACKS:
      raise UserError(f"attack: expected one of {', '.join(ATTACKS)}, got {attack!r}")
    self.model = model
    graphdef, self.state = nnx.split(model)
    self.program = _Program(graphdef, common.check_norm(norm), int(n_iter), int(n_restarts))
    self.norm = self.program.norm
    self.attack_name, self.aa_options = attack, dict(aa_options or {})

  def logits(self, x):
    return self.program.logits(self.state, x)

  def attack(self, x, y, keys, eps, loss):
    return self.program.attack(self.state, x, y, keys, eps, loss)

  def predict(self, x):
    """Clean (pred [B] int32, max softmax [B]) as numpy arrays."""
    return tuple(np.asarray(v) for v in self.program.clean(self.state, jnp.asarray(x)))

  def robust(self, x, pred, sample_keys, texts, valid=None) -> dict:
    """{radius text: [B] bool} robust at each radius (nested), keys ``sample_keys`` [B].

    ``valid``: only the first `valid` rows are real (the rest pad the batch to the compiled
    shape); AutoAttack, which buckets its own batches, then attacks only those.
    """
    values = [radii_lib.parse_radius(t) for t in texts]
    if self.attack_name == "autoattack":
      v = len(x) if valid is None else valid
      # The NNX module itself: autoattack caches its jitted attacks per model graph.
      robust = attacks.robust_at_radii(self.model, x[:v], pred[:v], key=sample_keys[:v],
                                       radii=values, norm=self.norm, attack="autoattack",
                                       **self.aa_options)
    else:
      robust = attacks.robust_at_radii(
          self.logits, x, pred, key=sample_keys, radii=values, norm=self.norm,
          attack_fn=lambda xa, ya, keys, eps: self.attack(xa, ya, keys, eps, "ce")[0])
    return {t: np.asarray(robust[v]) for t, v in zip(texts, values)}

  def adv_conf(self, x, pred, sample_keys, text):
    """[B] max softmax at the APGDconf point in the ball of radius `text` (eq. 17)."""
    eps = radii_lib.parse_radius(text)
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(sample_keys, _CONF_TAG)
    _, conf = self.attack(jnp.asarray(x), jnp.asarray(pred), radius_keys(keys, eps),
                          jnp.full((len(x),), eps, jnp.float32), "conf")
    return np.asarray(conf)


def weights_fingerprint(model) -> str:
  """sha256 (16 hex digits) of the model's weights and statistics (not its RNG state): ties a
  report to the weights that produced it."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(nnx.state(model, nnx.Not(nnx.RngState))):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()[:16]


def _check_settings(path: pathlib.Path, settings: dict) -> bool:
  """True if a finished report with these settings exists; refuses a mismatching resume."""
  reports.check_settings(path, settings)
  return path.exists()


def evaluate_model(model, x, y, *, radii, key, norm: str = "linf", n_iter: int = 40,
                   n_restarts: int = 1, conf_radii=(), batch_size: int = 500,
                   report_path=None, progress: bool = True, sample_idx=None,
                   attack: str = "apgd-ce", aa_options=None) -> dict:
  """Evaluates `model` on (x, y) and returns (and optionally writes) the per-sample report.

  Args:
    model: NNX model in eval mode mapping x to logits.
    x: [N, ...] float32 in [0, 1]; y: [N] int labels.
    radii: radii of the ``is_rob`` columns (strings like ``"1/255"`` or floats), any order.
    key: base key.
    norm: ``"linf"`` or ``"l2"``.
    n_iter, n_restarts: APGD budget (40 and 1 in the paper).
    conf_radii: radii for APGDconf; adds ``adv_conf@<r>`` (max softmax at the APGDconf point).
    batch_size: samples per chunk (one report flush per chunk).
    report_path: CSV to write (resumable through ``<path>.partial``); None keeps it in memory.
    sample_idx: [N] global sample indices (default 0..N-1), used for keys and the report.
    attack: ``"apgd-ce"`` (the paper's 40-step APGD) or ``"autoattack"``.
    aa_options: `attacks.autoattack` options, e.g. ``{"version": "standard"}``.

  Returns:
    dict column name -> [N] array, in report column order.
  """
  common.validate_inputs(x, y, 1.0, "evaluate")
  texts = sorted({radii_lib.format_radius(r) for r in radii}, key=radii_lib.parse_radius)
  conf_texts = [radii_lib.format_radius(r) for r in conf_radii]
  if not texts and not conf_texts:
    raise UserError("evaluate: give at least one radius")
  n = len(x)
  sample_idx = np.arange(n) if sample_idx is None else np.asarray(sample_idx)
  columns = list(reports.BASE_COLUMNS) + [f"is_rob@{t}" for t in texts] + [f"adv_conf@{t}" for t in conf_texts]
  runner = ModelRunner(model, norm=norm, n_iter=n_iter, n_restarts=n_restarts, attack=attack,
                       aa_options=aa_options)
  # AutoAttack-style warnings (probability outputs, zero gradients) before any long run.
  x16 = jnp.asarray(x[:16])
  checks.run_all(model, x16, jnp.argmax(model(x16), -1))

  def run_chunk(lo, hi):
    xb, yb, ib = x[lo:hi], y[lo:hi], sample_idx[lo:hi]
    m = hi - lo
    pad = lambda a: pad_rows(a, batch_size)
    pred, conf = (v[:m] for v in runner.predict(pad(xb)))
    sample_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(pad(ib)))
    row = {"sample_idx": ib, "label": yb, "pred": pred, "is_acc": pred == yb, "conf": conf}
    if texts:
      for text, rob in runner.robust(pad(xb), pad(pred), sample_keys, texts, valid=m).items():
        row[f"is_rob@{text}"] = rob[:m]
    for text in conf_texts:
      row[f"adv_conf@{text}"] = runner.adv_conf(pad(xb), pad(pred), sample_keys, text)[:m]
    return row

  chunks = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
  if report_path is None:
    rows = [run_chunk(lo, hi) for lo, hi in tqdm(chunks, desc="evaluate", disable=not progress)]
    return {c: np.concatenate([r[c] for r in rows]) for c in columns}
  report_path = pathlib.Path(report_path)
  settings = {"columns": columns, "attack": attack, "aa_options": dict(aa_options or {}),
              "norm": runner.norm, "n_iter": int(n_iter), "n_restarts": int(n_restarts),
              "key": np.asarray(jax.random.key_data(key)).ravel().tolist(), "model": weights_fingerprint(model),
              "samples": hashlib.sha256(np.asarray(sample_idx, np.int64).tobytes()).hexdigest()[:16]}
  if _check_settings(report_path, settings):
    return reports.read_report(report_path)
  with reports.ReportWriter(report_path, columns, n) as writer:
    todo = [(lo, hi) for lo, hi in chunks if writer.todo(sample_idx[lo:hi])]
    bar = tqdm(total=n, initial=n - sum(hi - lo for lo, hi in todo), unit="sample",
               desc=f"evaluate {report_path.name}", disable=not progress)
    for lo, hi in todo:
      row = run_chunk(lo, hi)
      for j in range(hi - lo):
        if int(row["sample_idx"][j]) not in writer.done:
          writer.write({c: row[c][j] for c in columns})
      writer.flush()
      bar.update(hi - lo)
    bar.close()
  return reports.read_report(report_path)


def evaluate_composition(models_, x, y, *, eps, key, select_at=None, norm: str = "linf",
                         n_iter: int = 40, n_restarts: int = 1, batch_size: int = 500,
                         sample_idx=None):
  """Evaluates the live composition H of `models_` (abstain models first, core last).

  Each abstain model selects by its robustness indicator at ``select_at`` (default 2 eps),
  checked with APGD-CE over the nested radii (eps, select_at); `compose.predict` gives H's
  predictions; H counts as robust at eps where the model that answered is (the selector is
  assumed unflipped, appendix A.3). Keys are those of `evaluate_model` with the same `key`, so
  the result equals composing the models' reports (`compose.compose_reports`).

  Args:
    models_: M NNX models in eval mode.
    x: [N, ...] in [0, 1]; y: [N] labels.
    eps: threat radius; select_at: one radius or one per abstain model.

  Returns:
    (`compose.Composition`, predictions [N] of H).
  """
  from jax_abstain import compose  # compose imports no attack code; keep it that way
  eps_t = radii_lib.format_radius(eps)
  k = len(models_) - 1
  sel = [select_at] * k if select_at is None or not isinstance(select_at, (list, tuple)) else list(select_at)
  if k < 1 or len(sel) != k:
    raise UserError("evaluate_composition: need >= 2 models and one select_at per abstain model")
  sel = [radii_lib.double_radius(eps_t) if r is None else radii_lib.format_radius(r) for r in sel]
  runners = [ModelRunner(m, norm=norm, n_iter=n_iter, n_restarts=n_restarts) for m in models_]
  n = len(x)
  sample_idx = np.arange(n) if sample_idx is None else np.asarray(sample_idx)
  pred, answered, rob = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
  for lo in range(0, n, batch_size):
    m = min(lo + batch_size, n) - lo
    xb, ib = pad_rows(x[lo:lo + m], batch_size), pad_rows(sample_idx[lo:lo + m], batch_size)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(ib))
    preds = [r.predict(xb)[0] for r in runners]
    masks = [r.robust(xb, p, keys, sorted({eps_t, s}, key=radii_lib.parse_radius))[s]
             for r, p, s in zip(runners, preds, sel)]
    h_pred, h_by = compose.predict([r.logits for r in runners], [lambda _, s=s: jnp.asarray(s) for s in masks], jnp.asarray(xb))
    h_pred, h_by = np.asarray(h_pred), np.asarray(h_by)
    h_rob = np.zeros(batch_size, bool)
    for j, r in enumerate(runners):
      # Attack only the samples model j answers, packed into one padded batch.
      rows = np.flatnonzero(h_by[:m] == j)
      if rows.size:
        rob_j = r.robust(pad_rows(xb[rows], batch_size), pad_rows(h_pred[rows], batch_size),
                         keys[pad_rows(rows, batch_size)], [eps_t])[eps_t]
        h_rob[rows] = rob_j[:rows.size]
    pred[lo:lo + m], answered[lo:lo + m], rob[lo:lo + m] = h_pred[:m], h_by[:m], h_rob[:m]
  return compose.Composition(answered, pred == np.asarray(y), rob), pred


def _summary_at(cols: dict, texts) -> dict:
  out = {}
  for text in texts:
    s = metrics.summary(cols["is_acc"], cols[f"is_rob@{text}"])
    out[text] = {"rob_acc": round(s["rob_acc"], 2), "rob_inacc": round(s["rob_inacc"], 2),
                 "splits": {k: round(v, 2) for k, v in s["splits"].items()}}
  return out


def report_and_summarize(model, x, y, eval_config, workdir, name: str, sample_idx=None) -> dict:
  """Writes ``reports/<name>.csv`` for (x, y) and returns the summary at every radius.

  Args:
    model: NNX model in eval mode.
    x, y: evaluation inputs [N, ...] in [0, 1] and labels [N].
    eval_config: ``radii``, ``conf_radii``, ``norm``, ``n_iter``, ``n_restarts``,
      ``batch_size``, ``seed``; optional ``attack`` (``apgd-ce`` or ``autoattack``) and
      ``autoattack`` (options of `attacks.autoattack`).
    workdir: run folder.
    name: report name.
    sample_idx: [N] indices of the samples in their split (default 0..N-1).

  Returns:
    {"nat_acc", "n", "attack", "at": {radius: {rob_acc, rob_inacc, splits}}, "report"} (percent).
  """
  e = eval_config
  attack = getattr(e, "attack", "apgd-ce")
  aa = getattr(e, "autoattack", None)
  aa = dict(aa.to_dict() if hasattr(aa, "to_dict") else aa or {}) if attack == "autoattack" else None
  cols = evaluate_model(model, x, y, radii=list(e.radii), key=jax.random.key(e.seed), norm=e.norm,
                        n_iter=e.n_iter, n_restarts=e.n_restarts, conf_radii=list(e.conf_radii),
                        batch_size=e.batch_size, sample_idx=sample_idx, attack=attack,
                        aa_options=aa, report_path=pathlib.Path(workdir) / "reports" / f"{name}.csv")
  texts = [radii_lib.format_radius(r) for r in e.radii]
  return {"n": int(len(y)), "nat_acc": round(metrics.natural_accuracy(cols["is_acc"]), 2),
          "attack": attack, "at": _summary_at(cols, texts), "report": f"reports/{name}.csv"}


def certify_and_summarize(model, x, y, cert_config, workdir, name: str, sample_idx=None, *,
                          seed: int = 0) -> dict:
  """Certifies (x, y) into ``reports/<name>.csv`` (``cert_pred,radius`` columns) and summarises.

  Args:
    cert_config: ``sigma``, ``n0``, ``n``, ``alpha``, ``batch_size`` of `smoothing.certify` and
      ``radii``, the L2 radii of the summary.

  Returns:
    {"n", "nat_acc" (base model), "sigma", "at": {radius: certification.summarize}, "report"}.
  """
  from jax_abstain.evaluation import certified as certification
  c = cert_config
  cols = certification.certify_report(
      model, x, y, pathlib.Path(workdir) / "reports" / f"{name}.csv", key=jax.random.key(seed),
      sigma=c.sigma, n0=c.n0, n=c.n, alpha=c.alpha, batch_size=c.batch_size, indices=sample_idx,
      model_tag=weights_fingerprint(model))
  at = {radii_lib.format_radius(r): {k: round(v, 2) for k, v in certification.summarize(cols, r).items()}
        for r in c.radii}
  return {"n": int(len(y)), "nat_acc": round(metrics.natural_accuracy(cols["is_acc"]), 2),
          "sigma": float(c.sigma), "at": at, "report": f"reports/{name}.csv"}


def check_labels(y, num_classes: int, what: str) -> None:
  if len(y) == 0:
    raise UserError(f"{what}: the data split is empty")
  if int(y.min()) < 0 or int(y.max()) >= num_classes:
    raise UserError(f"{what}: labels span {int(y.min())}..{int(y.max())} but the model has "
                    f"{num_classes} classes")


def format_summary(name: str, summary: dict) -> str:
  lines = [f"{name}: natural accuracy {summary['nat_acc']:.2f}% on {summary['n']} samples"]
  for radius, m in summary["at"].items():
    if "cert_acc" in m:
      lines.append(f"  L2 radius={radius:<6} cert_acc {m['cert_acc']:6.2f}  cert_inacc "
                   f"{m['cert_inacc']:6.2f}  commit_rate {m['commit_rate']:6.2f}")
    else:
      lines.append(f"  eps={radius:<8} rob_acc {m['rob_acc']:6.2f}  rob_inacc {m['rob_inacc']:6.2f}")
  return "\n".join(lines)


def run(config, workdir) -> dict:
  """Mode ``evaluate``: a saved or ported model (``config.model.dir``) on ``config.data``.

  Attacks at ``config.eval.radii`` write ``reports/<name>.csv``; a certified evaluation
  (``config.eval.certify.sigma`` > 0) writes ``reports/<name>.csv`` when there are no attack
  radii and ``reports/<name>_cert.csv`` next to the empirical report otherwise.
  """
  if not config.model.dir:
    raise UserError("config.model.dir: give the model directory, e.g. "
                    "--config=configs/evaluate.py:model=runs/mnist_std/model")
  e = config.eval
  attack = getattr(e, "attack", "apgd-ce")
  if attack not in ATTACKS:
    raise UserError(f"config.eval.attack: expected one of {', '.join(ATTACKS)}, got {attack!r}")
  cert = getattr(e, "certify", None)
  certified = cert is not None and float(cert.sigma) > 0
  empirical = bool(e.radii) or bool(e.conf_radii)
  if not certified and not empirical:
    raise UserError("config.eval: give attack radii (eval.radii) or a certified evaluation "
                    "(eval.certify.sigma > 0)")
  model = models.load(config.model.dir)
  x, y, idx = data.load_from_config(config.data, config.data.split, config.data.eval_limit)
  check_labels(y, int(models.read_manifest(config.model.dir)["num_classes"]), "config.data")
  results = {"model": str(config.model.dir), "data": config.data.name, "split": config.data.split}
  if empirical:
    results[config.name] = report_and_summarize(model, x, y, e, workdir, config.name, idx)
    print(format_summary(config.name, results[config.name]))
  if certified:
    name = f"{config.name}_cert" if empirical else config.name
    results[name] = certify_and_summarize(model, x, y, cert, workdir, name, idx, seed=e.seed)
    print(format_summary(name, results[name]))
  files.write_json(pathlib.Path(workdir) / "results.json", results)
  return results
