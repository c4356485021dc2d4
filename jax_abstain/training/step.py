"""The jitted SPMD training step: loss by name, optax SGD with the paper's schedules, mesh.

    tx = step.make_optimizer(cfg, steps_per_epoch)
    train_step = step.make_train_step(graphdef, cfg, tx)
    params, rest, opt_state, metrics = train_step(params, rest, opt_state, x, y, keys)

One `jax.jit` over a ``("data",)`` mesh of all devices (batch sharded, parameters replicated)
computes the adversarial examples and the loss; optax SGD with momentum and coupled weight
decay (PyTorch's SGD) updates the parameters. The model crosses into jit as
(graphdef, params, rest), ``rest`` holding batch statistics, all as pure dicts of arrays.

Batch-norm modes are explicit: ``bn_mode_attack`` is the mode of the forward passes inside the
attack, ``bn_mode_loss`` that of the loss's forward passes. The authors freeze BN statistics
during ERA (every forward in eval mode, reference section 1) and use train mode for the
TRADES/CRA loss; the loss-specific defaults in `LOSS_DEFAULT_BN` reproduce that.

The certified losses (``noise``, ``cra``; paper eq. 7-9) draw ``num_noise`` Gaussian copies
``x + eta``, eta ~ N(0, sigma^2 I), per input, unclamped as in the authors' code, and run them
through the model as one batch of K*B inputs.

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

from jax_abstain import attacks, losses, radii
from jax_abstain.attacks import common
from jax_abstain.errors import UserError

LOSSES = ("std", "trades", "era", "dga", "mart", "noise", "cra")
LOSS_DEFAULT_BN = {"std": "train", "trades": "train", "era": "eval", "dga": "eval", "mart": "train",
                   "noise": "train", "cra": "train"}
# Settings of the certified losses when a config does not name them (paper section 4.2, A.2).
CERTIFIED_DEFAULTS = {"sigma": 0.25, "num_noise": 16, "gamma": 4.0}


SCHEDULES = ("trades", "trades_scratch", "constant")


def lr_boundaries(schedule: str, epochs: int, steps_per_epoch: int) -> dict:
  """Step -> factor of the paper's schedules (appendix A.2; the authors' ``TradesLR``).

  ``trades``: lr x0.1 for epochs >= 0.75 * epochs (epochs 38-49 of 50; fine-tuning);
  ``trades_scratch``: x0.1 from 75% and again from 90% of the epochs; ``constant``.
  """
  if schedule not in SCHEDULES:
    raise UserError(f"train.schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
  fractions = {"constant": (), "trades": (0.75,), "trades_scratch": (0.75, 0.9)}[schedule]
  # ceil: the authors' test is ``epoch >= 0.75 * epochs`` on 0-based epochs.
  epochs_at = [math.ceil(f * epochs) for f in fractions]
  return {e * steps_per_epoch: 0.1 for e in epochs_at if 0 < e < epochs}


def beta_scale(cfg, epoch: int) -> float:
  """The factor on ``cfg.beta`` in 0-based `epoch`: ``beta_decay`` (0.1) to the power
  ``epoch // beta_decay_every``; 1 when ``beta_decay_every`` is 0 (the paper: constant beta).
  The authors' CRA script decays beta x0.1 at epochs 20 and 40 (reference section 2)."""
  every = int(getattr(cfg, "beta_decay_every", 0) or 0)
  return float(getattr(cfg, "beta_decay", 0.1)) ** (epoch // every) if every > 0 else 1.0


def make_optimizer(cfg, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum and coupled weight decay (PyTorch's SGD) and the `lr_boundaries`
  schedule ``cfg.schedule``; the step counter lives in the optimizer state."""
  lr = optax.piecewise_constant_schedule(
      cfg.lr, lr_boundaries(cfg.schedule, cfg.epochs, steps_per_epoch))
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
  """Returns ``loss_fn(params, rest, x, y, key, beta_scale=1) -> (scalar, (metrics, new_rest))``.

  ``beta_scale`` multiplies ``cfg.beta`` (the ERA/DGA/CRA weight; a traced scalar, so the
  authors' step decay of beta does not recompile).

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
  for field, mode in (("bn_mode_attack", bn_attack), ("bn_mode_loss", bn_loss)):
    if mode not in ("train", "eval"):
      raise UserError(f"train.{field}: expected train, eval or '' (the loss's default), got {mode!r}")
  pgd = functools.partial(attacks.pgd, eps=eps, norm=cfg.norm, n_iter=cfg.attack_steps,
                          rel_step=cfg.attack_rel_step)
  code = cfg.variant == "code"
  kl_reduction = "mean" if code else "sum"

  def loss_fn(params, rest, x, y, key, beta_scale=1.0):
    beta = cfg.beta * beta_scale
    frozen = jax.lax.stop_gradient((params, rest))
    attack_fn = lambda xa: _forward(graphdef, *frozen, xa, bn_attack)[0]
    forward = lambda xa, r: _forward(graphdef, params, r, xa, bn_loss)
    keys = common.example_keys(key, x.shape[0])
    k1, k2 = (jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i) for i in (1, 2))
    if name in ("noise", "cra"):
      # Only noisy copies are forwarded (no clean pass that would move BN statistics).
      k = int(certified["num_noise"]) if name == "cra" else int(getattr(cfg, "num_noise", 1))
      draw = lambda kk, xi: jax.random.normal(kk, (k,) + xi.shape, xi.dtype)
      eta = certified["sigma"] * jnp.swapaxes(jax.vmap(draw)(k1, x), 0, 1)   # [K, B, ...]
      flat, new_rest = forward((x[None] + eta).reshape((-1,) + x.shape[1:]), rest)
      noisy = flat.reshape((k, x.shape[0], -1))
      nat = noisy.mean(0)                       # for the accuracy metric only
      per_example = losses.noise(noisy, y) if name == "noise" else losses.cra(
          noisy, y, sigma=certified["sigma"], beta=beta, gamma=certified["gamma"],
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
      kwargs = dict(beta=beta, trades_beta=cfg.trades_beta, kl_reduction=kl_reduction,
                    trades_adv_logits=trades_adv)
      if name == "dga":
        kwargs["joint_softmax"] = code
      per_example = loss(nat, adv, y, **kwargs)
    # In eval BN mode the statistics must not move, whatever the forward returned.
    new_rest = new_rest if bn_loss == "train" else rest
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


def make_train_step(graphdef, cfg, tx):
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


