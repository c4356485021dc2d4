"""The jitted SPMD training step: the model's forward, the loss, optax SGD with the paper's
schedules, the mesh.

    cfg = TrainConfig.from_config({"loss": "era", "eps": "8/255"})
    tx = step.make_optimizer(cfg, steps_per_epoch)
    train_step = step.make_train_step(graphdef, cfg, tx)
    params, rest, opt_state, metrics = train_step(params, rest, opt_state, x, y, keys)

One `jax.jit` over a ``("data",)`` mesh of all devices (batch sharded, parameters replicated)
computes the adversarial examples and the loss; optax SGD with momentum and coupled weight
decay (PyTorch's SGD) updates the parameters. The model crosses into jit as
(graphdef, params, rest), ``rest`` holding batch statistics, all as pure dicts of arrays;
`forward` runs it in a given BN mode (model selection uses it too).

Batch-norm modes are explicit: ``cfg.bn_attack`` is the mode of the forward passes inside the
attack, ``cfg.bn_loss`` that of the loss's forward passes (`training.config.ATTACK_DEFAULT_BN`
and `LOSS_DEFAULT_BN`: the authors freeze BN statistics during ERA, attack in eval mode in
TRADES, and use train mode for the TRADES/CRA loss; docs/design.md, appendix A1). The losses themselves are `training.objectives`.

Randomness is per example: `keys` are [B] keys (``fold_in(step_key, sample_index)`` in
`training.loop`), so an example's attack start and noise do not depend on the batch
composition or the number of devices. A single key is also accepted (examples numbered 0..B-1).
"""
import functools
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jax_abstain.attacks import common
from jax_abstain.training import objectives
from jax_abstain.training.config import INTERVAL, TrainConfig


def lr_boundaries(schedule: str, epochs: int, steps_per_epoch: int) -> dict:
  """Step -> factor of the paper's schedules (appendix A.2; the authors' ``TradesLR``).

  ``trades``: lr x0.1 for epochs >= 0.75 * epochs (epochs 38-49 of 50; fine-tuning);
  ``trades_scratch``: x0.1 from 75% and again from 90% of the epochs; ``constant``.
  `schedule` is one of `training.config.SCHEDULES` (`TrainConfig` checks it).
  """
  fractions = {"constant": (), "trades": (0.75,), "trades_scratch": (0.75, 0.9)}[schedule]
  # ceil: the authors' test is ``epoch >= 0.75 * epochs`` on 0-based epochs.
  epochs_at = [math.ceil(f * epochs) for f in fractions]
  return {e * steps_per_epoch: 0.1 for e in epochs_at if 0 < e < epochs}


def beta_scale(cfg: TrainConfig, epoch: int) -> float:
  """The factor on ``cfg.beta`` in 0-based `epoch`: ``beta_decay`` (0.1) to the power
  ``epoch // beta_decay_every``; 1 when ``beta_decay_every`` is 0 (the paper: constant beta).
  The authors' CRA script decays beta x0.1 at epochs 20 and 40 (docs/design.md, appendix A2)."""
  every = cfg.beta_decay_every
  return cfg.beta_decay ** (epoch // every) if every > 0 else 1.0


def loss_scale(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
  """The schedule factor the step passes to the loss at 0-based `step`: `beta_scale` of the
  epoch, or for the interval losses (``ibp``) Gowal et al.'s ramp (2018, section 4): 0 for
  the first ``ibp_warmup`` of all steps, then linear up to 1 over ``ibp_ramp`` of them."""
  if cfg.loss not in INTERVAL:
    return beta_scale(cfg, step // steps_per_epoch)
  done = step / max(cfg.epochs * steps_per_epoch, 1)
  if cfg.ibp_ramp == 0:
    return float(done >= cfg.ibp_warmup)
  return float(min(max((done - cfg.ibp_warmup) / cfg.ibp_ramp, 0.0), 1.0))


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum and coupled weight decay (PyTorch's SGD) and the `lr_boundaries`
  schedule ``cfg.schedule``; the step counter lives in the optimizer state."""
  lr = optax.piecewise_constant_schedule(
      cfg.lr, lr_boundaries(cfg.schedule, cfg.epochs, steps_per_epoch))
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                     optax.sgd(lr, momentum=cfg.momentum or None))


def forward(graphdef, params: dict, rest: dict, x, mode: str):
  """Logits [B, C] of x [B, ...] and the updated non-parameter state (batch stats, RNG counts)
  in BN mode ``"train"`` or ``"eval"``. params and rest are pure dicts of arrays, and so is
  the returned state: NNX Variables carried across `jax.grad` would be mutated from another
  trace level."""
  model = nnx.merge(graphdef, params, rest)
  model.train() if mode == "train" else model.eval()
  logits = model(x)
  return logits, nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[2])


def make_loss_fn(graphdef, cfg: TrainConfig):
  """Returns ``loss_fn(params, rest, x, y, key, beta_scale=1) -> (scalar, (metrics, new_rest))``.

  The scalar is the batch mean of the per-example loss of the objective ``cfg.loss``
  (`training.objectives`); metrics are that mean and the accuracy of the objective's logits.
  ``beta_scale`` multiplies ``cfg.beta`` (a traced scalar, so the authors' step decay of beta
  does not recompile). In eval BN mode the returned state is the given one.
  """
  cfg = TrainConfig.from_config(cfg)
  objective = objectives.OBJECTIVES[cfg.loss]

  def loss_fn(params, rest, x, y, key, beta_scale=1.0):
    frozen = jax.lax.stop_gradient((params, rest))
    keys = common.example_keys(key, x.shape[0])
    streams = tuple(jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i) for i in (1, 2))
    batch = objectives.Batch(
        cfg=cfg, x=x, y=y, keys=streams, beta=cfg.beta * beta_scale, scale=beta_scale, rest=rest,
        forward=lambda xa, r: forward(graphdef, params, r, xa, cfg.bn_loss),
        attack_logits=lambda xa: forward(graphdef, *frozen, xa, cfg.bn_attack)[0])
    per_example, nat, new_rest = objective(batch)
    new_rest = new_rest if cfg.bn_loss == "train" else rest
    acc = jnp.mean(jnp.argmax(nat, -1) == y)
    return per_example.mean(), ({"loss": per_example.mean(), "acc": acc}, new_rest)

  return loss_fn


def data_mesh(devices=None):
  """A 1-D ``("data",)`` mesh over `devices` (default: every device of every host).

  The axis is ``Auto``: jit propagates the batch sharding through the step (GSPMD), so
  reshapes that merge the batch axis (K noisy copies x B inputs) need no annotations.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def make_train_step(graphdef, cfg: TrainConfig, tx):
  """The jitted SPMD step ``(params, rest, opt_state, x, y, keys, beta_scale=1) -> (params,
  rest, opt_state, metrics)``; x [B, ...] and y [B] sharded over the mesh, keys [B] (or one key),
  metrics the scalars loss, acc (clean or noise-averaged accuracy) and grad_norm."""
  loss_fn = make_loss_fn(graphdef, cfg)

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
  def step(params, rest, opt_state, x, y, key, beta_scale=1.0):
    (_, (metrics, new_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, rest, x, y, key, beta_scale)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return params, new_rest, opt_state, metrics

  return step


