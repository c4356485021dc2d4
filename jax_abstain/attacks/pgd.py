"""Projected gradient descent (Madry et al. 2018), the training-time attack.

    x_adv = pgd(logits_fn, x, y, key=key, eps=8/255)                      # CE away from y
    x_adv = pgd(logits_fn, x, y, key=key, eps=eps, loss="kl", start="normal")  # TRADES

Fixed step ``rel_step * eps`` (sign of the gradient for Linf, the normalised gradient for L2),
``n_iter`` steps in a `lax.fori_loop`, projection onto the eps-ball and [0, 1] after every
step. Returns the final iterate (foolbox's LinfPGD, which the authors train with) or, with
``return_best=True``, the per-example highest-loss iterate.
"""
import jax
import jax.numpy as jnp

from jax_abstain import losses
from jax_abstain.attacks import common, compiled
from jax_abstain.errors import UserError


def _kl_loss(nat_logits):
  def loss(logits, _):
    return losses.kl_divergence(nat_logits, logits)
  return loss


def pgd(logits_fn: common.LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array, eps,
        norm: str = "linf", n_iter: int = 10, rel_step: float = 0.25, loss: str = "ce",
        start: str = "uniform", return_best: bool = False) -> jax.Array:
  """Runs PGD and returns adversarial inputs of the same shape as x.

  Args:
    logits_fn: maps a batch [B, ...] to logits [B, C], C >= 2. A function is evaluated as
      given (in the caller's BN mode: training passes its own ``bn_mode_attack`` forward); an
      NNX module runs as an eval-mode copy and is never changed (docs/design.md, Contracts).
    x: clean inputs [B, ...] in [0, 1].
    y: [B] int32 reference labels (the label, or F(x) for label-free robustness).
    key: a key, or [B] per-example keys.
    eps: radius (scalar or [B]).
    norm: ``"linf"`` or ``"l2"``.
    n_iter: number of steps (10 for training, as in the paper).
    rel_step: step size as a fraction of eps (0.25 in the authors' training code).
    loss: ``"ce"`` (maximise CE(f(x'), y)), ``"kl"`` (maximise KL(p(x) || p(x')), TRADES;
      y unused), ``"conf"`` (maximise the confidence of the top class other than y, i.e. the
      inner minimisation of the ERA penalty, paper eq. 6), or ``"dlr"`` (>= 3 classes).
    start: ``"uniform"`` in the ball (foolbox/Madry), ``"normal"`` (x + 0.001 N(0, 1), the
      TRADES reference code) or ``"none"``.
    return_best: return the highest-loss iterate per example instead of the last one.

  Returns:
    x_adv [B, ...] with ``||x_adv - x|| <= eps`` and values in [0, 1].

  Raises:
    UserError: bad inputs, labels outside 0..C-1, a model output that is not [B, C] logits
      (C >= 2; 3 for dlr) or not finite, or a forward pass that changes state.
  """
  norm = common.check_norm(norm)
  if compiled.is_eager(x, y, key, eps):   # compiled once per batch-size bucket
    return compiled.call(pgd, logits_fn, x, y, key=key, eps=eps, name="pgd", norm=norm,
                         min_classes=common.MIN_CLASSES.get(loss, 2), why=f"loss {loss}",
                         n_iter=n_iter,
                         rel_step=rel_step, loss=loss, start=start, return_best=return_best)
  common.validate_inputs(x, y, eps, "pgd", norm)
  if loss not in ("kl", *common.LOSS_NAMES) or loss == "dlr-targeted":
    raise UserError(f"pgd: loss must be one of ce, kl, conf, dlr, got {loss!r}")
  logits_fn, _, _ = common.take_model(logits_fn, x, y, name="pgd",
                                      min_classes=common.MIN_CLASSES.get(loss, 2),
                                      why=f"loss {loss}")
  keys = common.example_keys(key, x.shape[0])
  loss_fn = _kl_loss(jax.lax.stop_gradient(logits_fn(x))) if loss == "kl" else common.attack_loss(loss)
  if start == "uniform":
    x_adv = common.uniform_start(keys, x, eps, norm)
  elif start == "normal":
    noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
    x_adv = common.project(x + 0.001 * noise, x, eps, norm)
  elif start == "none":
    x_adv = x
  else:
    raise ValueError(f"pgd start must be uniform, normal or none, got {start!r}")
  step = rel_step * (jnp.reshape(jnp.asarray(eps, x.dtype), (-1,) + (1,) * (x.ndim - 1))
                     if jnp.ndim(eps) else eps)

  def body(_, carry):
    x_adv, x_best, loss_best = carry
    per_example, _, grad = common.loss_and_grad(logits_fn, loss_fn, x_adv, y)
    improved = per_example > loss_best
    x_best = jnp.where(improved.reshape((-1,) + (1,) * (x.ndim - 1)), x_adv, x_best)
    loss_best = jnp.maximum(per_example, loss_best)
    if norm == "linf":
      direction = jnp.sign(grad)
    else:
      g_norm = common.l2_norm(grad).reshape((-1,) + (1,) * (x.ndim - 1))
      direction = grad / jnp.maximum(g_norm, 1e-12)
    x_adv = common.project(x_adv + step * direction, x, eps, norm)
    return x_adv, x_best, loss_best

  init = (x_adv, x_adv, jnp.full((x.shape[0],), -jnp.inf, x.dtype))
  x_adv, x_best, loss_best = jax.lax.fori_loop(0, n_iter, body, init)
  if not return_best:
    return x_adv
  final_loss = loss_fn(logits_fn(x_adv), y)
  last_is_best = (final_loss > loss_best).reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.where(last_is_best, x_adv, x_best)
