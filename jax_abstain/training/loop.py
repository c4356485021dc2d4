"""The resumable data-parallel training loop: grain batches, step checkpoints, model selection.

    result = loop.train(model, x, y, config.train, workdir=wd, name="era", augment="crop_flip",
                        validation=(x_val, y_val))
    result["model"], result["best"]          # model updated in place; the selected step

Every ``checkpoint_every`` steps (and at the end) an orbax checkpoint stores the parameters,
optimizer state (with its step count, hence the lr schedule), batch statistics, the RNG key,
the best validation score so far, and the grain iterator position of every host. A run with
the same workdir restores the latest complete checkpoint and continues; because batches come
from the restored iterator and the attack keys are ``fold_in(fold_in(key, step), sample)``, a
run killed at any point (even SIGKILL inside a save) ends with the same parameters as an
uninterrupted one.

The global batch ``cfg.batch_size`` is split over the JAX processes (each reads its own shard
through `pipeline.train_loader`) and then over all devices (``("data",)`` mesh). With
validation data and ``cfg.select_every`` > 0, the model is validated after every
`select_every`-th epoch (0-based epochs 0, 5, ..., like the authors) and the best one (see
`selection`) is kept under ``checkpoints/<name>_best``; it is the model returned.
"""
import pathlib
import time

import jax
import numpy as np
from absl import logging
from flax import nnx

from jax_abstain.training import checkpointing
from jax_abstain.data import pipeline
from jax_abstain.errors import UserError
from jax_abstain.training import distributed, selection, step as step_lib, writer as writer_lib


def plan(cfg, n: int, mesh=None) -> dict:
  """Checks the batch against devices, processes and data; returns the step counts.

  Raises:
    UserError: a batch size that does not split over the devices or exceeds the data.
  """
  mesh = step_lib.data_mesh() if mesh is None else mesh
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  if cfg.batch_size < 1 or cfg.batch_size % n_dev or cfg.batch_size % n_proc:
    raise UserError(f"train.batch_size: {cfg.batch_size} must be a positive multiple of the "
                    f"{n_dev} devices ({n_proc} processes)")
  per_host = cfg.batch_size // n_proc
  steps_per_epoch = pipeline.steps_per_epoch(n, per_host, n_proc)
  if steps_per_epoch < 1:
    raise UserError(f"train.batch_size {cfg.batch_size} exceeds the {n} training samples")
  every = int(getattr(cfg, "checkpoint_every", 0)) or steps_per_epoch
  return {"mesh": mesh, "per_host": per_host, "steps_per_epoch": steps_per_epoch,
          "total": int(cfg.epochs) * steps_per_epoch, "checkpoint_every": every,
          "log_every": int(getattr(cfg, "log_every", 0)) or steps_per_epoch,
          "select_every": int(getattr(cfg, "select_every", 0))}


def _check_finite(means: dict, step: int, name: str):
  for key, value in means.items():
    if not np.isfinite(value):
      raise FloatingPointError(
          f"training {name!r} diverged: {key} is {value} at step {step}; lower train.lr or "
          "check the data")


@jax.jit
def _example_keys(key_data, step, index):
  """[B] keys fold_in(fold_in(key, step), sample index): independent of batch layout."""
  key = jax.random.fold_in(jax.random.wrap_key_data(key_data), step)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)


def train(model: nnx.Module, x, y, cfg, *, workdir, name: str, seed: int = 0,
          progress: bool = True, augment: str = "none", validation=None, mesh=None) -> dict:
  """Trains `model` in place on (x, y) with loss ``cfg.loss``; resumes from the workdir.

  Args:
    model: NNX model (updated in place: the selected parameters, or the last ones).
    x: [N, ...] float32 inputs in [0, 1] (or uint8 images); y: [N] int32 labels.
    cfg: the ``train`` config: loss settings (see `step.make_loss_fn`), epochs, batch_size
      (global), lr, momentum, weight_decay, schedule; optional checkpoint_every (steps; 0 =
      every epoch), keep_checkpoints (3), log_every (steps; 0 = every epoch), select_every
      (epochs; 0 = no selection) and the ``select_*`` settings of `selection.Evaluator`.
    workdir: run folder: ``checkpoints/<name>[_best]``, ``metrics_<name>.jsonl``,
      ``tensorboard/<name>``.
    name: model name within the run.
    seed: data order, augmentation and attack randomness.
    progress: show a tqdm bar (steps/s, ETA).
    augment: augmentation name (`jax_abstain.data.augment`), applied per record by grain.
    validation: (x_val, y_val) for model selection, or None.
    mesh: a ``("data",)`` mesh (default: all devices).

  Returns:
    {"model", "steps", "best": {"step", metric, ...} or None, "resumed_from": step}.
  """
  p = plan(cfg, len(x), mesh)
  mesh, total = p["mesh"], p["total"]
  workdir = pathlib.Path(workdir)
  tx = step_lib.make_optimizer(cfg, p["steps_per_epoch"])
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  step_fn = step_lib.make_train_step(graphdef, cfg, tx)     # validates the loss settings
  select = validation is not None and p["select_every"] > 0
  if select:
    metric, mode = selection.criterion(cfg.loss)
    evaluator = selection.Evaluator(graphdef, cfg, mesh, *validation, seed=seed)
  shard = (jax.process_index(), jax.process_count())
  loader = pipeline.train_loader(x, y, batch_size=p["per_host"], seed=seed, augment=augment,
                                 shard=shard)
  state = {"params": params.to_pure_dict(), "rest": rest.to_pure_dict(),
           "opt": tx.init(params.to_pure_dict()),
           "rng": np.asarray(jax.random.key_data(jax.random.key(seed))),
           "best": np.asarray(np.nan, np.float32), "best_step": np.asarray(-1, np.int32)}
  keep = int(getattr(cfg, "keep_checkpoints", 3))
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints" / name, keep=keep)
  best_ckpt = checkpointing.Checkpointer(workdir / "checkpoints" / f"{name}_best", keep=1)
  state, start = ckpt.restore_or(state)
  if start:
    logging.info("%s: resumed from step %d of %d (epoch %.2f)", name, start, total,
                 start / p["steps_per_epoch"])
    iterator = pipeline.restore(loader, ckpt.data_state(start))
  else:
    iterator = iter(loader)
  best_step = int(state["best_step"])
  best = float(state["best"]) if best_step >= 0 else None
  prm, rst, opt = distributed.replicate(mesh, (state["params"], state["rest"], state["opt"]))
  rng = distributed.replicate(mesh, state["rng"])
  metrics = writer_lib.MetricWriter(workdir, name, resume_step=start)
  bar = writer_lib.progress_bar(total, initial=start, desc=f"train {name}", enabled=progress)
  sums, count, t0 = None, 0, time.time()
  try:
    for s in range(start, total):
      batch = next(iterator)
      xb, yb, ib = (distributed.global_batch(mesh, batch[k]) for k in ("image", "label", "index"))
      scale = np.float32(step_lib.beta_scale(cfg, s // p["steps_per_epoch"]))
      prm, rst, opt, m = step_fn(prm, rst, opt, xb, yb, _example_keys(rng, s, ib), scale)
      sums = m if sums is None else jax.tree.map(lambda a, b: a + b, sums, m)
      count, done = count + 1, s + 1
      bar.update(1)
      epoch_end = done % p["steps_per_epoch"] == 0
      validate = select and epoch_end and (done // p["steps_per_epoch"] - 1) % p["select_every"] == 0
      if done % p["log_every"] == 0 or done == total or validate or done % p["checkpoint_every"] == 0:
        means = {k: float(v) / count for k, v in sums.items()}
        _check_finite(means, done, name)     # before any checkpoint can hold NaNs
      if done % p["log_every"] == 0 or done == total:
        rate = count / max(time.time() - t0, 1e-9)
        metrics.write_scalars(done, means, epoch=done / p["steps_per_epoch"], steps_per_s=rate)
        writer_lib.log_progress(name, done, total, rate, means)
        bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['acc']:.3f}")
        sums, count, t0 = None, 0, time.time()
      if validate:
        scores = evaluator(prm, rst)
        metrics.write_scalars(done, scores, kind="val", epoch=done / p["steps_per_epoch"])
        if selection.improved(scores[metric], best, mode):
          best, best_step = scores[metric], done
          best_ckpt.delete_after(done - 1)   # a resumed run may find its own later bests
          best_ckpt.save(done, {"params": prm, "rest": rst}, metrics=scores)
      if done % p["checkpoint_every"] == 0 or done == total or validate:
        ckpt.save(done, {"params": prm, "rest": rst, "opt": opt, "rng": rng,
                         "best": np.asarray(np.nan if best is None else best, np.float32),
                         "best_step": np.asarray(best_step, np.int32)},
                  data_state=pipeline.get_state(iterator))
    metrics.flush()
    if best_step >= 0:
      chosen, _ = best_ckpt.restore_or({"params": prm, "rest": rst}, step=best_step)
      prm, rst = chosen["params"], chosen["rest"]
      logging.info("%s: selected step %d (%s %.2f on validation)", name, best_step, metric, best)
  finally:
    bar.close()
    metrics.close()
    ckpt.close()
    best_ckpt.close()
  nnx.update(model, _state(params, prm), _state(rest, rst))
  best_info = None if best_step < 0 else {"step": best_step, "metric": metric, "value": best}
  return {"model": model, "steps": total, "best": best_info, "resumed_from": start}


def _state(template: nnx.State, pure: dict) -> nnx.State:
  """An nnx.State shaped like `template` holding the arrays of the pure dict `pure`."""
  state = jax.tree.map(lambda v: v, template)
  nnx.replace_by_pure_dict(state, jax.device_get(pure))
  return state
