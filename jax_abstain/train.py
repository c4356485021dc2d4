"""Training with the paper's losses: std, TRADES, ERA, DGA, MART, noise, CRA; data parallel.

    model = train.fit(model, x, y, config.train, workdir=wd, name="era")

One jitted SPMD step (`jax.jit` over a ``("data",)`` mesh of all devices, batch sharded,
parameters replicated) computes the adversarial examples and the loss; optax SGD with
momentum and coupled weight decay (PyTorch's SGD) updates the parameters. The model crosses
into jit as (graphdef, params, rest) where ``rest`` holds batch statistics.

Batch-norm modes are explicit: ``bn_mode_attack`` is the mode of the forward passes inside the
attack, ``bn_mode_loss`` that of the loss's forward passes. The authors freeze BN statistics
during ERA (every forward in eval mode, reference section 1) and use train mode for the
TRADES/CRA loss; the loss-specific defaults in `LOSS_DEFAULT_BN` reproduce that.

The certified losses (``noise``, ``cra``; paper eq. 7-9) draw ``num_noise`` Gaussian copies
``x + eta``, eta ~ N(0, sigma^2 I), per input, unclamped as in the authors' code, and run them
through the model as one batch of K*B inputs.

Each epoch ends with an orbax checkpoint (params, optimizer state, batch stats); a run with
the same workdir restores the latest one and continues. Shuffling comes from (seed, epoch) and
adversarial keys from (seed, epoch, step), so a resumed run ends with the same parameters as an
uninterrupted one.
"""
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from jax_abstain import attacks, checkpointing, losses, radii
from jax_abstain.errors import UserError

LOSSES = ("std", "trades", "era", "dga", "mart", "noise", "cra")
LOSS_DEFAULT_BN = {"std": "train", "trades": "train", "era": "eval", "dga": "eval", "mart": "train",
                   "noise": "train", "cra": "train"}
# Settings of the certified losses when a config does not name them (paper section 4.2, A.2).
CERTIFIED_DEFAULTS = {"sigma": 0.25, "num_noise": 16, "gamma": 4.0}


def make_optimizer(cfg, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum and coupled weight decay; schedules of the paper (appendix A.2).

  ``trades``: lr x0.1 from 75% of the epochs (fine-tuning); ``trades_scratch``: x0.1 at 75%
  and again at 90%; ``constant``.
  """
  boundaries = {"constant": {}, "trades": {int(0.75 * cfg.epochs) * steps_per_epoch: 0.1},
                "trades_scratch": {int(0.75 * cfg.epochs) * steps_per_epoch: 0.1,
                                   int(0.9 * cfg.epochs) * steps_per_epoch: 0.1}}
  if cfg.schedule not in boundaries:
    raise UserError(f"train.schedule: expected one of {', '.join(boundaries)}, got {cfg.schedule!r}")
  lr = optax.piecewise_constant_schedule(cfg.lr, boundaries[cfg.schedule])
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                     optax.sgd(lr, momentum=cfg.momentum or None))


def _forward(graphdef, params, rest, x, mode: str):
  """Logits and updated non-parameter state (batch stats, RNG counts) in BN mode ``train`` or
  ``eval``. params and rest are pure dicts of arrays, and so is the returned state: NNX
  Variables carried across `jax.grad` would be mutated from another trace level."""
  model = nnx.merge(graphdef, params, rest)
  model.train() if mode == "train" else model.eval()
  logits = model(x)
  return logits, nnx.split(model, nnx.Param, ...)[2].to_pure_dict()


def make_loss_fn(graphdef, cfg):
  """Returns ``loss_fn(params, rest, x, y, key) -> (scalar, (metrics, new_rest))``.

  The scalar is the batch mean of the per-example loss of `losses`. Adversarial points are
  computed with stopped gradients (the attack is not differentiated through).
  """
  name = cfg.loss
  if name not in LOSSES:
    raise UserError(f"train.loss: expected one of {', '.join(LOSSES)}, got {name!r}")
  adversarial = name in ("trades", "era", "dga", "mart")
  eps = radii.parse_radius(cfg.eps, name="train.eps") if adversarial else None
  # getattr, not .get: callers pass ConfigDicts or plain attribute objects (benchmarks).
  certified = {k: getattr(cfg, k, v) for k, v in CERTIFIED_DEFAULTS.items()}
  if name in ("noise", "cra"):
    radii.parse_radius(certified["sigma"], name="train.sigma")
    if int(certified["num_noise"]) < 1:
      raise UserError(f"train.num_noise: expected >= 1, got {certified['num_noise']}")
  bn_attack = cfg.bn_mode_attack or LOSS_DEFAULT_BN[name]
  bn_loss = cfg.bn_mode_loss or LOSS_DEFAULT_BN[name]
  pgd = functools.partial(attacks.pgd, eps=eps, norm=cfg.norm, n_iter=cfg.attack_steps,
                          rel_step=cfg.attack_rel_step)
  code = cfg.variant == "code"
  kl_reduction = "mean" if code else "sum"

  def loss_fn(params, rest, x, y, key):
    frozen = jax.lax.stop_gradient((params, rest))
    attack_fn = lambda xa: _forward(graphdef, *frozen, xa, bn_attack)[0]
    forward = lambda xa, r: _forward(graphdef, params, r, xa, bn_loss)
    k1, k2 = jax.random.split(key)
    if name in ("noise", "cra"):
      # Only noisy copies are forwarded (no clean pass that would move BN statistics).
      k = int(certified["num_noise"]) if name == "cra" else int(getattr(cfg, "num_noise", 1))
      eta = certified["sigma"] * jax.random.normal(k1, (k,) + x.shape, x.dtype)
      flat, new_rest = forward((x[None] + eta).reshape((-1,) + x.shape[1:]), rest)
      noisy = flat.reshape((k, x.shape[0], -1))
      nat = noisy.mean(0)                       # for the accuracy metric only
      per_example = losses.noise(noisy, y) if name == "noise" else losses.cra(
          noisy, y, sigma=certified["sigma"], beta=cfg.beta, gamma=certified["gamma"],
          code_variant=code)
    else:
      nat, new_rest = forward(x, rest)
    if name == "std":
      per_example = losses.cross_entropy(nat, y)
    elif name == "trades":
      x_adv = jax.lax.stop_gradient(pgd(attack_fn, x, y, key=k1, loss="kl", start="normal"))
      adv, new_rest = forward(x_adv, new_rest)
      per_example = losses.trades(nat, adv, y, beta=cfg.trades_beta)
    elif name == "mart":
      x_adv = jax.lax.stop_gradient(pgd(attack_fn, x, y, key=k1, loss="ce"))
      adv, new_rest = forward(x_adv, new_rest)
      per_example = losses.mart(nat, adv, y, beta=cfg.trades_beta)
    elif name in ("era", "dga"):  # the penalty point is away from the clean prediction F(x), not y
      clean_pred = jnp.argmax(attack_fn(x), -1)
      if code:   # one CE-PGD point for both terms (reference section 1, items 2 and 5)
        x_pen = jax.lax.stop_gradient(pgd(attack_fn, x, clean_pred, key=k1, loss="ce"))
        adv, new_rest = forward(x_pen, new_rest)
        trades_adv = None
      else:      # paper eq. 4-6: inner min of the penalty CE, and a KL-maximising TRADES point
        x_pen = jax.lax.stop_gradient(pgd(attack_fn, x, clean_pred, key=k1, loss="conf"))
        x_kl = jax.lax.stop_gradient(pgd(attack_fn, x, y, key=k2, loss="kl", start="normal"))
        adv, new_rest = forward(x_pen, new_rest)
        trades_adv, new_rest = forward(x_kl, new_rest)
      loss = losses.era if name == "era" else losses.dga
      kwargs = dict(beta=cfg.beta, trades_beta=cfg.trades_beta, kl_reduction=kl_reduction,
                    trades_adv_logits=trades_adv)
      if name == "dga":
        kwargs["joint_softmax"] = code
      per_example = loss(nat, adv, y, **kwargs)
    # In eval BN mode the statistics must not move, whatever the forward returned.
    new_rest = new_rest if bn_loss == "train" else rest
    acc = jnp.mean(jnp.argmax(nat, -1) == y)
    return per_example.mean(), ({"loss": per_example.mean(), "acc": acc}, new_rest)

  return loss_fn


def data_mesh():
  """A 1-D ``("data",)`` mesh over every device (all hosts).

  The axis is ``Auto``: jit propagates the batch sharding through the step (GSPMD), so
  reshapes that merge the batch axis (K noisy copies x B inputs) need no annotations.
  """
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def make_train_step(graphdef, cfg, tx):
  """The jitted SPMD step ``(params, rest, opt_state, x, y, key) -> (..., metrics)``."""
  loss_fn = make_loss_fn(graphdef, cfg)

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
  def step(params, rest, opt_state, x, y, key):
    (_, (metrics, new_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, rest, x, y, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return params, new_rest, opt_state, metrics

  return step


def _check_finite(metrics: dict, epoch: int, name: str):
  for key, value in metrics.items():
    if not np.isfinite(value):
      raise FloatingPointError(
          f"training {name!r} diverged: {key} is {value} in epoch {epoch}; lower train.lr "
          "or check the data")


def fit(model: nnx.Module, x: np.ndarray, y: np.ndarray, cfg, *, workdir, name: str,
        seed: int = 0, progress: bool = True) -> nnx.Module:
  """Trains `model` in place on (x, y) with loss ``cfg.loss``; resumes from workdir.

  Args:
    model: NNX model (updated in place and returned).
    x: [N, ...] float32 inputs in [0, 1]; y: [N] int32 labels.
    cfg: the ``train`` ConfigDict (loss, beta, trades_beta, eps, norm, variant, epochs,
      batch_size, lr, momentum, weight_decay, schedule, attack_steps, attack_rel_step,
      bn_mode_attack, bn_mode_loss).
    workdir: run folder; checkpoints go to ``checkpoints/<name>``, metrics to
      ``metrics_<name>.jsonl``.
    name: model name within the run.
    seed: data order and attack randomness.
  """
  mesh = data_mesh()
  n_dev = mesh.devices.size
  if cfg.batch_size % n_dev:
    raise UserError(f"train.batch_size {cfg.batch_size} must be a multiple of the {n_dev} devices")
  steps_per_epoch = len(x) // cfg.batch_size
  if steps_per_epoch < 1:
    raise UserError(f"train.batch_size {cfg.batch_size} exceeds the {len(x)} training samples")
  workdir = pathlib.Path(workdir)
  tx = make_optimizer(cfg, steps_per_epoch)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  state = {"params": params.to_pure_dict(), "rest": rest.to_pure_dict(),
           "opt": tx.init(params.to_pure_dict())}
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints" / name)
  state, start_epoch = ckpt.restore_or(state)
  if start_epoch:
    logging.info("%s: resumed from epoch %d", name, start_epoch)
  p, r, opt = jax.device_put((state["params"], state["rest"], state["opt"]), replicated)
  step_fn = make_train_step(graphdef, cfg, tx)
  base_key = jax.random.key(seed)
  metrics_path = workdir / f"metrics_{name}.jsonl"
  bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
             desc=f"train {name}", disable=not progress, unit="step", dynamic_ncols=True)
  try:
    for epoch in range(start_epoch, cfg.epochs):
      order = np.random.default_rng([seed, epoch]).permutation(len(x))
      epoch_key = jax.random.fold_in(base_key, epoch)
      sums, t0 = None, time.time()
      for s in range(steps_per_epoch):
        idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        xb, yb = jax.device_put((x[idx], y[idx]), batch_sharding)
        p, r, opt, m = step_fn(p, r, opt, xb, yb, jax.random.fold_in(epoch_key, s))
        sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
        bar.update(1)
      means = {k: float(v) / steps_per_epoch for k, v in sums.items()}
      _check_finite(means, epoch, name)
      bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['acc']:.3f}")
      record = {"model": name, "epoch": epoch + 1, **means,
                "steps_per_s": steps_per_epoch / max(time.time() - t0, 1e-9)}
      with metrics_path.open("a") as f:
        f.write(json.dumps(record) + "\n")
      ckpt.save(epoch + 1, {"params": p, "rest": r, "opt": opt})
  finally:
    bar.close()
    ckpt.close()
  nnx.update(model, _state(params, p), _state(rest, r))
  return model


def _state(template: nnx.State, pure: dict) -> nnx.State:
  """An nnx.State shaped like `template` holding the arrays of the pure dict `pure`."""
  state = jax.tree.map(lambda v: v, template)
  nnx.replace_by_pure_dict(state, jax.device_get(pure))
  return state


def train_and_evaluate(config, workdir) -> dict:
  """Mode ``train``: train (or fine-tune) one model on ``config.data``, save it, evaluate it.

  ``config.model``: ``name`` (registry id), ``num_classes``, ``options`` (constructor options),
  ``init_dir`` (a saved or ported model directory to fine-tune; "" trains from scratch).
  Writes ``model/`` (loadable with `models.load`), ``reports/<config.name>.csv`` and
  ``results.json`` into the workdir; a rerun resumes training from the last checkpoint.
  """
  from jax_abstain import data, evaluate, models, reports  # the job's pieces, not the step's
  workdir = pathlib.Path(workdir)
  m = config.model
  options = dict(m.get("options", {}) or {})
  if m.init_dir:
    manifest = models.read_manifest(m.init_dir)
    arch, options = manifest["architecture"], dict(manifest["options"])
    model = models.load(m.init_dir, eval_mode=False)
  else:
    arch = m.name
    _, options = models.resolve(arch, num_classes=m.num_classes, **options)
    model = models.create(arch, seed=config.seed, **options)
  num_classes = int(options["num_classes"])
  x_train, y_train, _ = data.load_from_config(config.data, "train", config.data.train_limit)
  evaluate.check_labels(y_train, num_classes, "config.data (train split)")
  model.train()
  fit(model, x_train, y_train, config.train, workdir=workdir, name=config.name, seed=config.seed)
  model.eval()
  source = {"init_dir": str(m.init_dir) if m.init_dir else None, "loss": config.train.loss,
            "data": config.data.name}
  models.save(model, workdir / "model", arch=arch, options=options, source=source, overwrite=True)
  x_test, y_test, idx = data.load_from_config(config.data, config.data.split,
                                              config.data.eval_limit)
  evaluate.check_labels(y_test, num_classes, f"config.data ({config.data.split} split)")
  summary = evaluate.report_and_summarize(model, x_test, y_test, config.eval, workdir,
                                          config.name, idx)
  results = {"model": "model", "architecture": arch, "loss": config.train.loss,
             "data": config.data.name, "split": config.data.split, config.name: summary}
  reports.write_json(workdir / "results.json", results)
  print(evaluate.format_summary(config.name, summary))
  return results
