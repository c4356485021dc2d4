"""The jitted model runner of every evaluation, its resumable report loop, and the identities
stored next to a report.

    runner = ModelRunner(model, norm="linf", n_iter=40)
    pred, conf = runner.predict(x)                                     # [B] int, [B] max softmax
    robust = runner.robust(x, pred, sample_keys(key, idx), ["1/255", "2/255"])  # {r: [B] bool}
    model_identity(model)                                              # '3f2a...' (16 hex)

The jitted functions take the weights as arguments and are cached by architecture and attack
budget (`_Program`), so the models of a sweep share one compilation and the cache keeps no
model alive. Robustness is label-free: callers attack the model's own clean prediction.
`run_into_report` appends chunks of samples to a per-sample report (`reports.ReportWriter`),
resuming a killed run with the missing chunks and re-reading a finished report.
`model_identity` is the one model identity of both report kinds' settings sidecars
(docs/design.md, Contracts): a report is never completed with another model's results.
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

from jax_abstain import (attacks, devices, preemption, radii as radii_lib, reports, soundness,
                         validation)
from jax_abstain.attacks import common
from jax_abstain.attacks.multi_radius import radius_keys
from jax_abstain.evaluation import hosts
from jax_abstain.evaluation.config import ATTACKS
from jax_abstain.errors import UserError

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
    model: NNX model, inputs [B, ...] in [0, 1] -> logits [B, C]; it runs as an eval-mode copy
      (`validation.eval_copy`) whatever its mode, and is never changed.
    norm: ``"linf"`` or ``"l2"``.
    n_iter, n_restarts: APGD budget (40 and 1 in the paper).
    attack: ``"apgd-ce"`` or ``"autoattack"`` for the ``is_rob`` columns.
    aa_options: `attacks.autoattack` options (``version``, ``n_iter``, ``attacks_to_run``, ...).
    mesh: the ``("data",)`` mesh the batches are split over (default `devices.local_mesh`: every
      device of this process); the weights are replicated on it. Batches whose rows are a
      multiple of its devices are split, others run unsplit. A chunk of ``batch_size`` rows per
      device (`chunk_rows`) gives every device the same compiled shape whatever the number of
      devices or hosts, so every row's floats are the same too (XLA's CPU kernels round a row
      the same way wherever it sits in a batch of a given shape, not across shapes).

  Raises:
    UserError: an unknown attack or norm.
  """

  def __init__(self, model, *, norm="linf", n_iter=40, n_restarts=1, attack="apgd-ce",
               aa_options=None, mesh=None):
    if attack not in ATTACKS:
      raise UserError(f"attack: expected one of {', '.join(ATTACKS)}, got {attack!r}")
    # The eval-mode copy (docs/design.md, Contracts): the caller's module is never changed.
    self.model = validation.eval_copy(model)
    graphdef, state = nnx.split(self.model)
    self.mesh = devices.local_mesh() if mesh is None else mesh
    self.state = devices.replicate(self.mesh, state)
    self.program = _Program(graphdef, common.check_norm(norm), int(n_iter), int(n_restarts))
    self.norm = self.program.norm
    self.attack_name, self.aa_options = attack, dict(aa_options or {})

  def chunk_rows(self, per_device: int) -> int:
    """The rows of one chunk: `per_device` rows on every device of the mesh."""
    return int(per_device) * self.mesh.size

  def _split(self, *arrays):
    """The arrays sharded over the mesh's ``data`` axis, or as they are if their rows do not
    split evenly (they then run on one device)."""
    if len(arrays[0]) % self.mesh.size:
      return tuple(jnp.asarray(a) for a in arrays)
    return tuple(devices.split_rows(self.mesh, a) for a in arrays)

  def logits(self, x):
    return self.program.logits(self.state, *self._split(x))

  def attack(self, x, y, keys, eps, loss):
    return self.program.attack(self.state, *self._split(x, y, keys, eps), loss)

  def predict(self, x):
    """Clean (pred [B] int32, max softmax [B]) as numpy arrays.

    Raises:
      UserError: NaN or inf logits (their max softmax is NaN) for some input.
    """
    pred, conf = (np.asarray(v) for v in self.program.clean(self.state, *self._split(x)))
    if not np.all(np.isfinite(conf)):
      bad = np.flatnonzero(~np.isfinite(conf))
      raise UserError(f"model: returns NaN or inf logits for {bad.size} of {len(conf)} inputs "
                      f"(first: row {int(bad[0])} of the batch)")
    return pred, conf

  def robust(self, x, pred, keys, texts, valid=None) -> dict:
    """{radius text: [B] bool} robust at each radius (nested), per-sample keys ``keys`` [B].

    ``valid``: only the first `valid` rows are real (the rest pad the batch to the compiled
    shape); AutoAttack, which buckets its own batches, then attacks only those.
    """
    values = [radii_lib.parse_radius(t) for t in texts]
    if self.attack_name == "autoattack":
      v, block = (len(x) if valid is None else valid), max(1, len(x) // self.mesh.size)
      # The NNX module itself: autoattack caches its jitted attacks per model graph. It
      # compacts its own survivors, on one device: the blocks of one device's rows go one
      # after the other, so a row meets the same batches on any number of devices.
      parts = [attacks.robust_at_radii(self.model, x[lo:min(lo + block, v)],
                                       pred[lo:min(lo + block, v)],
                                       key=keys[lo:min(lo + block, v)], radii=values,
                                       norm=self.norm, attack="autoattack", **self.aa_options)
               for lo in range(0, v, block)]
      robust = {r: np.concatenate([np.asarray(p[r]) for p in parts]) for r in values}
    else:
      robust = attacks.robust_at_radii(
          self.logits, x, pred, key=keys, radii=values, norm=self.norm,
          attack_fn=lambda xa, ya, k, eps: self.attack(xa, ya, k, eps, "ce")[0])
    return {t: np.asarray(robust[v]) for t, v in zip(texts, values)}

  def adv_conf(self, x, pred, keys, text):
    """[B] max softmax at the APGDconf point in the ball of radius `text` (eq. 17).

    The point goes through the soundness guard like every attack result that feeds a report
    (`soundness.check_attack_result`: inside its ball and [0, 1]), and the confidence is
    re-read from the model at the checked point.

    Raises:
      SoundnessError: an APGDconf point outside its ball or [0, 1] (a bug, not bad input).
    """
    eps = radii_lib.parse_radius(text)
    conf_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, _CONF_TAG)
    x_adv, _ = self.attack(np.asarray(x), np.asarray(pred), radius_keys(conf_keys, eps),
                           np.full((len(x),), eps, np.float32), "conf")
    soundness.check_attack_result(self.logits, x, x_adv, pred, eps=eps, norm=self.norm,
                                  name=f"apgd-conf at radius {text}")
    return np.asarray(jax.nn.softmax(self.logits(np.asarray(x_adv)), -1).max(-1))


def sample_keys(key, sample_idx) -> jax.Array:
  """[N] keys ``fold_in(key, sample_idx_i)``: a sample's randomness depends on its index only."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(sample_idx))


def model_identity(model) -> str:
  """The identity of a model in a report's settings: 16 hex digits of the sha256 of an NNX
  module's weights and statistics (not its RNG state). A plain function has no weights to
  hash; its identity is its qualified name, so a report of a function is tied to its name only.
  """
  if not isinstance(model, nnx.Module):
    return f"function {getattr(model, '__module__', '')}.{getattr(model, '__qualname__', '?')}"
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(nnx.state(model, nnx.Not(nnx.RngState))):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()[:16]


def key_identity(key) -> list:
  """The raw words of a PRNG key (typed or legacy uint32), as stored in a report's settings."""
  if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.asarray(key).ravel().tolist()


def samples_identity(sample_idx) -> str:
  """16 hex digits of the sha256 of the sample indices (int64), as stored in the settings."""
  return hashlib.sha256(np.asarray(sample_idx, np.int64).tobytes()).hexdigest()[:16]


def sample_indices(sample_idx, n: int) -> np.ndarray:
  """[n] int64 distinct indices of the samples in their split (default ``0..n-1``).

  Raises:
    UserError: not n distinct integers.
  """
  idx = np.arange(n) if sample_idx is None else np.asarray(sample_idx)
  if (idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer)
      or len(np.unique(idx)) != n):
    raise UserError(f"sample_idx: expected {n} distinct integer sample indices, got shape "
                    f"{idx.shape}")
  return idx.astype(np.int64)


def run_into_report(path, settings: dict, columns, sample_idx, chunks, run_chunk, *,
                    progress: bool = True, process=None) -> dict:
  """Writes (or completes, or re-reads) the per-sample report at `path`, chunk by chunk.

  In a job of several processes each process runs the chunks of its own range of samples into
  its own partial file and process 0 merges them (`hosts`; docs/design.md, "Evaluation on many
  devices and hosts"); every process returns the finished report.

  Args:
    path: CSV path (``<path>.partial`` while unfinished; docs/design.md, Contracts).
    settings: everything that changes the results; stored in ``<path>.settings.json`` and
      compared on resume (`reports.check_settings`).
    columns: column names in order, ``sample_idx`` first.
    sample_idx: [N] sample indices.
    chunks: list of position arrays into ``0..N-1``; one report flush per chunk.
    run_chunk: positions -> {column: [len(positions)] array}.
    progress: show a tqdm bar (process 0 only).
    SIGTERM (one process, `preemption`) stops the loop after the chunk it is flushing and
    raises `preemption.Preempted`; a rerun resumes.
    process: (index, count) of this process (default ``jax.process_index()``,
      ``jax.process_count()``).

  Returns:
    The finished report's columns (`reports.read_report`), sorted by ``sample_idx``.

  Raises:
    UserError: the report was started with other settings.
  """
  path = pathlib.Path(path)
  index, count = process or (jax.process_index(), jax.process_count())
  reports.check_settings(path, settings, started=bool(hosts.partial_files(path)))
  if path.exists():
    return reports.read_report(path)
  header = ",".join(columns)
  done = hosts.rows_done(path, header).keys()
  mine = set(hosts.own_positions(len(sample_idx), index, count).tolist())
  todo = []
  for pos in chunks:
    pos = np.asarray([p for p in pos if p in mine and int(sample_idx[p]) not in done], int)
    if pos.size:
      todo.append(pos)
  # len + 1: the writer never renames its file itself; `hosts.finish` writes the report.
  with reports.ReportWriter(hosts.own_partial(path, index, count), columns,
                            len(sample_idx) + 1) as writer, \
       tqdm(total=len(mine), initial=len(mine) - sum(len(p) for p in todo), unit="sample",
            desc=path.name, disable=not progress or index != 0) as bar, \
       preemption.Watch(sync=False) as watch:
    for pos in todo:
      row = run_chunk(pos)
      for j in range(len(pos)):
        writer.write({c: row[c][j] for c in columns})
      writer.flush()
      bar.update(len(pos))
      if watch.requested(0):   # SIGTERM: the rows so far are flushed; stop here
        raise preemption.Preempted(f"{path.name}: stopped on SIGTERM with {len(writer.done)} "
                                   "samples of this process written; run again to resume")
  hosts.finish(path, header, sample_idx, index)
  return reports.read_report(path)
