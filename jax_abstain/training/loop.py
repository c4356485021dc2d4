"""The resumable data-parallel training loop: grain batches, step checkpoints, model selection.

    result = loop.train(model, x, y, TrainConfig(loss="era"), workdir=wd, name="era",
                        augment="crop_flip", validation=(x_val, y_val))
    result["model"], result["best"]          # model updated in place; the selected step

Every ``checkpoint_every`` steps (and at the end) an orbax checkpoint stores the parameters,
optimizer state (with its step count, hence the lr schedule), batch statistics, the RNG key,
the best validation score so far, and the grain iterator position of every host. A run with
the same workdir restores the latest complete checkpoint and continues; because batches come
from the restored iterator and the attack keys are ``fold_in(fold_in(key, step), sample)``, a
run killed at any point (even SIGKILL inside a save) ends with the same parameters as an
uninterrupted one. SIGTERM (a scheduler's notice before preemption, `preemption`) saves a
checkpoint at the next step and raises `preemption.Preempted`.

The global batch ``cfg.batch_size`` is split over the JAX processes (each reads its own shard
through `pipeline.train_loader`) and then over all devices (``("data",)`` mesh);
`check_batch_size` is the one check of that split. With validation data and
``cfg.select_every`` > 0, the model is validated after every `select_every`-th epoch (0-based
epochs 0, 5, ..., like the authors) and the best one (see `selection`) is kept under
``checkpoints/<name>_best``; it is the model returned.
"""
import dataclasses
import pathlib
import time

import jax
import numpy as np
from absl import logging
from flax import nnx

from jax_abstain import preemption
from jax_abstain.data import pipeline
from jax_abstain.errors import UserError
from jax_abstain.training import checkpointing, distributed, selection
from jax_abstain.training import step as step_lib, writer as writer_lib
from jax_abstain.training.config import TrainConfig


def check_batch_size(batch_size: int, n_devices: int | None = None, *,
                     name: str = "train.batch_size") -> None:
  """Checks that the global batch splits evenly over the processes and the devices.

  The train job calls it before writing a workdir (with the default: every device), `plan`
  with the devices of its mesh.

  Raises:
    UserError: a batch that is not a positive multiple of the devices and the processes.
  """
  n_dev = jax.device_count() if n_devices is None else n_devices
  n_proc = jax.process_count()
  if batch_size < 1 or batch_size % n_dev or batch_size % n_proc:
    raise UserError(f"{name}: {batch_size} must be a positive multiple of the {n_dev} devices "
                    f"({n_proc} processes)")


@dataclasses.dataclass(frozen=True)
class Plan:
  """Step counts of a run: ``per_host`` rows per host and step, ``total`` steps, and the
  intervals (in steps; ``select_every`` in epochs, 0 = no selection)."""
  mesh: jax.sharding.Mesh
  per_host: int
  steps_per_epoch: int
  total: int
  checkpoint_every: int
  log_every: int
  select_every: int


def plan(cfg: TrainConfig, n: int, mesh=None) -> Plan:
  """Checks the batch against devices, processes and the `n` training rows; the step counts.

  Raises:
    UserError: a batch size that does not split over the devices (`check_batch_size`) or
      exceeds the data.
  """
  mesh = step_lib.data_mesh() if mesh is None else mesh
  check_batch_size(cfg.batch_size, mesh.devices.size)
  n_proc = jax.process_count()
  per_host = cfg.batch_size // n_proc
  steps_per_epoch = pipeline.steps_per_epoch(n, per_host, n_proc)
  if steps_per_epoch < 1:
    raise UserError(f"train.batch_size {cfg.batch_size} exceeds the {n} training samples")
  return Plan(mesh=mesh, per_host=per_host, steps_per_epoch=steps_per_epoch,
              total=cfg.epochs * steps_per_epoch,
              checkpoint_every=cfg.checkpoint_every or steps_per_epoch,
              log_every=cfg.log_every or steps_per_epoch, select_every=cfg.select_every)


def _check_finite(means: dict, step: int, name: str):
  for key, value in means.items():
    if not np.isfinite(value):
      raise FloatingPointError(
          f"training {name!r} diverged: {key} is {value} at step {step}; lower train.lr or "
          "check the data")


@jax.jit
def example_keys(key_data, step, index):
  """[B] keys fold_in(fold_in(key, step), sample index): independent of batch layout."""
  key = jax.random.fold_in(jax.random.wrap_key_data(key_data), step)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)


def train(model: nnx.Module, x, y, cfg, *, workdir, name: str, seed: int = 0,
          progress: bool = True, augment: str = "none", validation=None, mesh=None) -> dict:
  """Trains `model` in place on (x, y) with loss ``cfg.loss``; resumes from the workdir.

  Args:
    model: NNX model (updated in place: the selected parameters, or the last ones).
    x: [N, ...] float32 inputs in [0, 1] (or uint8 images); y: [N] int32 labels.
    cfg: a `TrainConfig` or a mapping of its fields (`TrainConfig.from_config`).
    workdir: run folder: ``checkpoints/<name>[_best]``, ``metrics_<name>.jsonl``,
      ``tensorboard/<name>``.
    name: model name within the run.
    seed: data order, augmentation and attack randomness.
    progress: show a tqdm bar (steps/s, ETA).
    augment: augmentation name (`jax_abstain.data.augment`), applied per record by grain.
    validation: (x_val, y_val) for model selection, or None.
    mesh: a ``("data",)`` mesh (default: all devices).

  Returns:
    {"model", "steps", "best": {"step", "metric", "value"} or None, "resumed_from": step}.

  Raises:
    UserError: a bad config, a batch that does not fit the devices or the data, a checkpoint
      of another model. FloatingPointError: a diverging run (before any NaN is saved).
  """
  cfg = TrainConfig.from_config(cfg)
  p = plan(cfg, len(x), mesh)
  tx = step_lib.make_optimizer(cfg, p.steps_per_epoch)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  step_fn = step_lib.make_train_step(graphdef, cfg, tx)
  evaluator = None
  if validation is not None and p.select_every > 0:
    evaluator = selection.Evaluator(graphdef, cfg, p.mesh, *validation, seed=seed)
  loader = pipeline.train_loader(x, y, batch_size=p.per_host, seed=seed, augment=augment,
                                 shard=(jax.process_index(), jax.process_count()))
  initial = {"params": nnx.to_pure_dict(params), "rest": nnx.to_pure_dict(rest),
             "opt": tx.init(nnx.to_pure_dict(params)),
             "rng": np.asarray(jax.random.key_data(jax.random.key(seed))),
             "best": np.asarray(np.nan, np.float32), "best_step": np.asarray(-1, np.int32)}
  run = _Run(pathlib.Path(workdir), name, cfg, p, evaluator)
  try:
    start = run.resume(initial, loader)
    run.steps(step_fn, progress)
    prm, rst = run.chosen()
  finally:
    run.close()
  nnx.update(model, _state(params, prm), _state(rest, rst))
  return {"model": model, "steps": p.total, "best": run.best_info(), "resumed_from": start}


class _Run:
  """One run's mutable pieces: device state, iterator, checkpoints, metrics, the best score."""

  def __init__(self, workdir: pathlib.Path, name: str, cfg: TrainConfig, p: Plan, evaluator):
    self.name, self.cfg, self.p, self.evaluator = name, cfg, p, evaluator
    self.metric, self.mode = selection.criterion(cfg.loss)
    self.ckpt = checkpointing.Checkpointer(workdir / "checkpoints" / name,
                                           keep=cfg.keep_checkpoints)
    self.best_ckpt = checkpointing.Checkpointer(workdir / "checkpoints" / f"{name}_best", keep=1)
    self.workdir, self.metrics = workdir, None

  def resume(self, initial: dict, loader) -> int:
    """Restores the newest intact checkpoint (or starts at 0) and puts the state on the mesh;
    damaged steps are reported and skipped (`checkpointing.Checkpointer.restore_or`)."""
    state, self.start = self._restore_consistent(initial)
    if self.start:
      logging.info("%s: resumed from step %d of %d (epoch %.2f)", self.name, self.start,
                   self.p.total, self.start / self.p.steps_per_epoch)
      self.iterator = pipeline.restore(loader, self.ckpt.data_state(self.start))
    else:
      self.iterator = iter(loader)
    self.best_step = int(state["best_step"])
    self.best = float(state["best"]) if self.best_step >= 0 else None
    self.prm, self.rst, self.opt = distributed.replicate(
        self.p.mesh, (state["params"], state["rest"], state["opt"]))
    self.rng = distributed.replicate(self.p.mesh, state["rng"])
    self.metrics = writer_lib.MetricWriter(self.workdir, self.name, resume_step=self.start)
    return self.start

  def _restore_consistent(self, initial: dict):
    """(state, step) of the newest intact checkpoint whose selected model can still be had:
    either its checkpoint under ``<name>_best`` is intact, or a later best checkpoint exists
    that the replayed steps re-create. Otherwise (the selected model's checkpoint is damaged or
    gone) the run resumes from a step before the selection, so that it selects and saves that
    model again; the steps after it are deleted (the run writes them again)."""
    state, start = self.ckpt.restore_or(initial)
    best_step = int(state["best_step"])
    intact = self.best_ckpt.intact_steps()
    if best_step < 0 or best_step in intact or any(b > start for b in intact):
      return state, start
    logging.warning("%s: the checkpoint of the selected step %d is damaged or missing; resuming "
                    "from an earlier step to select and save it again", self.name, best_step)
    state, start = self.ckpt.restore_or(initial, before=best_step)
    self.ckpt.delete_after(start)
    return state, start

  def steps(self, step_fn, progress: bool) -> None:
    """Runs the steps from `start` to the end: log, validate and checkpoint on schedule.

    The first step compiles the training step: it is announced and runs before the progress
    bar starts, so the bar's rate and ETA leave compilation out; the bar counts a step once it
    has finished (JAX dispatches asynchronously). Log lines print above the bar.
    """
    self.sums, self.count = None, 0
    with writer_lib.logs_above_bars(), preemption.Watch() as watch:
      for s in range(self.start, self.p.total):
        if s == self.start:
          self._first_step(step_fn, progress)
        else:
          self._step(step_fn, s)
          self.bar.update(1)
          self.timed += 1
        saved = self._after_step(s + 1)
        if watch.requested(s + 1) and s + 1 < self.p.total:   # SIGTERM: save here, then stop
          self._stop(s + 1, saved)
    self.metrics.flush()

  def _stop(self, done: int, saved: bool) -> None:
    """Saves step `done` (unless just saved) and raises `preemption.Preempted`."""
    if not saved:
      self._save(done)
    self.metrics.flush()
    raise preemption.Preempted(f"{self.name}: stopped on SIGTERM after step {done} of "
                               f"{self.p.total}, checkpoint saved; run again to resume")

  def _first_step(self, step_fn, progress: bool) -> None:
    """The step that compiles (announced, timed), then the bar and the rate clock start."""
    writer_lib.announce(f"{self.name}: compiling the training step ...")
    t = time.time()
    self._step(step_fn, self.start)
    writer_lib.announce(f"{self.name}: compiled and ran step {self.start + 1} in "
                        f"{time.time() - t:.1f} s")
    self.bar = writer_lib.progress_bar(self.p.total, initial=self.start + 1,
                                       desc=f"train {self.name}", enabled=progress)
    self.t0, self.timed, self.validated = time.time(), 0, False

  def _step(self, step_fn, s: int) -> None:
    """Runs step s (0-based) and waits for it; adds its metrics to the running sums."""
    mesh, p = self.p.mesh, self.p
    batch = next(self.iterator)
    xb, yb, ib = (distributed.global_batch(mesh, batch[k]) for k in ("image", "label", "index"))
    scale = np.float32(step_lib.loss_scale(self.cfg, s, p.steps_per_epoch))
    self.prm, self.rst, self.opt, m = step_fn(self.prm, self.rst, self.opt, xb, yb,
                                              example_keys(self.rng, s, ib), scale)
    jax.block_until_ready(m)
    self.sums = m if self.sums is None else jax.tree.map(lambda a, b: a + b, self.sums, m)
    self.count += 1

  def _after_step(self, done: int) -> bool:
    """Logs, validates and checkpoints on schedule; True if it saved a checkpoint."""
    p = self.p
    epoch_end = done % p.steps_per_epoch == 0
    validate = (self.evaluator is not None and epoch_end
                and (done // p.steps_per_epoch - 1) % p.select_every == 0)
    log = done % p.log_every == 0 or done == p.total
    save = done % p.checkpoint_every == 0 or done == p.total or validate
    if log or save:
      means = {k: float(v) / self.count for k, v in self.sums.items()}
      _check_finite(means, done, self.name)     # before any checkpoint can hold NaNs
    if log:
      # Steps per second since the last log line, without the compiling first step.
      rate = self.timed / max(time.time() - self.t0, 1e-9) if self.timed else None
      self.metrics.write_scalars(done, means, epoch=done / p.steps_per_epoch,
                                 **({"steps_per_s": rate} if rate else {}))
      writer_lib.log_progress(self.name, done, p.total, rate, means)
      self.bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['acc']:.3f}")
      self.sums, self.count, self.t0, self.timed = None, 0, time.time(), 0
    if validate:
      self._validate(done)
    if save:
      self._save(done)
    return save

  def _save(self, done: int) -> None:
    self.ckpt.save(done, {"params": self.prm, "rest": self.rst, "opt": self.opt,
                          "rng": self.rng,
                          "best": np.asarray(np.nan if self.best is None else self.best,
                                             np.float32),
                          "best_step": np.asarray(self.best_step, np.int32)},
                   data_state=pipeline.get_state(self.iterator))

  def _validate(self, done: int) -> None:
    if not self.validated:   # its attack compiles now: announced, and kept out of the ETA
      writer_lib.announce(f"{self.name}: compiling the validation attack (model selection) ...")
    t = time.time()
    scores = self.evaluator(self.prm, self.rst)
    if not self.validated:
      self.bar.unpause()   # tqdm: the time since its last print is left out of rate and ETA
      self.t0, self.validated = self.t0 + time.time() - t, True
    self.metrics.write_scalars(done, scores, kind="val", epoch=done / self.p.steps_per_epoch)
    if selection.improved(scores[self.metric], self.best, self.mode):
      self.best, self.best_step = scores[self.metric], done
      self.best_ckpt.delete_after(done - 1)   # a resumed run may find its own later bests
      self.best_ckpt.save(done, {"params": self.prm, "rest": self.rst}, metrics=scores)

  def chosen(self):
    """(params, rest) of the selected step, or of the last step without selection."""
    if self.best_step < 0:
      return self.prm, self.rst
    chosen, _ = self.best_ckpt.restore_or({"params": self.prm, "rest": self.rst},
                                          step=self.best_step)
    logging.info("%s: selected step %d (%s %.2f on validation)", self.name, self.best_step,
                 self.metric, self.best)
    return chosen["params"], chosen["rest"]

  def best_info(self):
    if self.best_step < 0:
      return None
    return {"step": self.best_step, "metric": self.metric, "value": self.best}

  def close(self) -> None:
    if hasattr(self, "bar"):
      self.bar.close()
    if self.metrics is not None:
      self.metrics.close()
    self.ckpt.close()
    self.best_ckpt.close()


def _state(template: nnx.State, pure: dict) -> nnx.State:
  """An nnx.State shaped like `template` holding the arrays of the pure dict `pure`."""
  state = jax.tree.map(lambda v: v, template)
  nnx.replace_by_pure_dict(state, jax.device_get(pure))
  return state
