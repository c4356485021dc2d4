"""Auto-PGD (Croce & Hein 2020): PGD with momentum and an adaptive step-size schedule.

    x_adv = apgd(logits_fn, x, y, key=key, eps=8/255)                  # APGD-CE, 40 steps
    x_adv = apgd(logits_fn, x, y, key=key, eps=eps, loss="conf")       # APGDconf, paper eq. 17
    x_adv = apgd(logits_fn, x, y, key=key, eps=eps, loss="dlr-targeted", n_iter=100)  # APGD-T
    x_adv = apgd(logits_fn, x, y, key=key, eps=12.0, norm="l1")         # l1-APGD

For Linf and L2 the schedule is the published one: step ``2 * eps``; momentum 0.75 (1.0 on the first step);
checkpoints after ``p1 = max(int(0.22 n), 1)`` iterations, then at intervals shrinking by
``max(int(0.03 n), 1)`` down to ``max(int(0.06 n), 1)``; at a checkpoint a sample's step is
halved and its iterate reset to its best point if its loss increased in at most 75% of the
steps since the last checkpoint, or if its best loss did not improve and its step was not
halved at the previous checkpoint. Everything is per example, so a sample's trajectory does
not depend on the rest of the batch. L1 follows l1-APGD (see `l1`). APGD-T runs once per target
class (the 2nd .. 10th most likely at x), only on the samples earlier targets left robust; a
randomized model is attacked with EOT (``randomized=True, eot_iter=...``).

Return value: for misclassification losses (``ce``, ``dlr``, ``dlr-targeted``) the first
iterate at which the prediction differs from y (a sample that never flips returns the clean x), so ``argmax
logits_fn(x_adv) == y`` iff the sample survived; the loop stops early once every sample has
flipped, which cannot change any result because flipped samples are frozen. For ``conf``
(``best_loss``) the highest-loss iterate is returned, as in the paper's APGDconf.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jax_abstain.attacks import common, compiled, l1
from jax_abstain.errors import UserError


class ApgdResult(NamedTuple):
  x_adv: jax.Array       # [B, ...]
  robust: jax.Array      # [B] bool: argmax f(x_adv) == y for every iterate tried
  best_loss: jax.Array   # [B] highest loss seen


def checkpoint_schedule(n_iter: int) -> tuple[np.ndarray, np.ndarray]:
  """Iterations after which the step size is checked, and the window length at each.

  Returns:
    is_checkpoint: [n_iter] bool, True at iteration i (0-based) when a check happens after it.
    window: [n_iter] int, the number of steps since the previous check (valid where True).
  """
  size_decr = max(int(0.03 * n_iter), 1)
  n_iter_min = max(int(0.06 * n_iter), 1)
  k = max(int(0.22 * n_iter), 1)
  is_checkpoint = np.zeros(n_iter, bool)
  window = np.zeros(n_iter, np.int32)
  counter = 0
  for i in range(n_iter):
    counter += 1
    if counter == k:
      is_checkpoint[i], window[i] = True, k
      k = max(k - size_decr, n_iter_min)
      counter = 0
  return is_checkpoint, window


def _bshape(v, x):
  return v.reshape((-1,) + (1,) * (x.ndim - 1))


def _step(x_adv, x_prev, grad, x, eps, step_size, momentum, norm):
  """One APGD update with momentum ``a``: z = P(x + s * dir); x_new = P(x + a(z - x) + (1-a)(x - x_prev))."""
  if norm == "linf":
    z = common.project(x_adv + step_size * jnp.sign(grad), x, eps, norm)
  else:
    z = common.project(x_adv + step_size * grad / jnp.maximum(_bshape(common.l2_norm(grad), x), 1e-12),
                       x, eps, norm)
  return common.project(x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev), x, eps, norm)


def apgd_single_run(logits_fn, x, y, keys, *, eps, norm, n_iter, loss, best_loss,
                    y_target=None, active=None, randomized=False, eot_iter=1):
  """One APGD run (no restarts); keys [B]. Returns an ApgdResult (traceable, no validation).

  ``active`` [B] bool marks the samples to attack (the others are treated as already broken,
  so a run over only a few survivors exits as soon as they are broken). ``randomized``: logits_fn
  is ``(x, keys [B]) -> logits`` and gradients are averaged over ``eot_iter`` draws.
  """
  loss_fn = common.attack_loss(loss, y_target)
  grad_fn = common.make_grad_fn(logits_fn, loss_fn, y, keys if randomized else None, eot_iter)
  is_checkpoint, window = (jnp.asarray(a) for a in checkpoint_schedule(n_iter))
  is_checkpoint_l1 = jnp.asarray(l1.checkpoint_schedule(n_iter))
  batch = x.shape[0]
  eps_vec = jnp.asarray(eps, x.dtype) * jnp.ones((batch,), x.dtype)
  eps_b = _bshape(eps_vec, x)
  n_features = int(np.prod(x.shape[1:]))

  if norm == "l1":
    x_adv = l1.random_start(keys, x, eps_vec)
  else:
    x_adv = common.random_start(keys, x, eps_b, norm)
  loss0, logits0, grad = grad_fn(x_adv, jnp.int32(-1))
  robust = jnp.argmax(logits0, -1) == y
  if active is not None:
    robust = robust & active
  state = dict(
      i=jnp.int32(0), x_adv=x_adv, x_prev=x_adv, grad=grad,
      x_best=x_adv, grad_best=grad, loss_best=loss0,
      x_best_adv=jnp.where(_bshape(robust, x), x, x_adv), robust=robust,
      # Initial step: 2 eps (Linf, L2), eps (L1).
      step_size=(1.0 if norm == "l1" else 2.0) * eps_b,
      loss_steps=jnp.zeros((n_iter, batch), x.dtype),
      loss_best_last_check=loss0, reduced_last_check=jnp.ones((batch,), bool),
      # l1-APGD: fraction of coordinates moved per step, and the sparsity at the last check.
      topk=jnp.full((batch,), 0.2, x.dtype), sp_old=jnp.full((batch,), n_features, x.dtype))

  def cond(s):
    keep_going = s["i"] < n_iter
    return keep_going if best_loss else keep_going & jnp.any(s["robust"])

  def body(s):
    i = s["i"]
    active = s["robust"] if not best_loss else jnp.ones((batch,), bool)
    momentum = jnp.where(i > 0, 0.75, 1.0).astype(x.dtype)
    if norm == "l1":  # no momentum in l1-APGD
      x_new = l1.sparse_step(s["x_adv"], s["grad"], x, s["step_size"], s["topk"], eps_vec)
    else:
      x_new = _step(s["x_adv"], s["x_prev"], s["grad"], x, eps_b, s["step_size"], momentum, norm)
    loss_i, logits, grad = grad_fn(x_new, i)
    flipped = jnp.argmax(logits, -1) != y
    newly_broken = active & flipped
    x_best_adv = jnp.where(_bshape(newly_broken, x), x_new, s["x_best_adv"])
    robust = s["robust"] & ~flipped
    improved = active & (loss_i > s["loss_best"])
    x_best = jnp.where(_bshape(improved, x), x_new, s["x_best"])
    grad_best = jnp.where(_bshape(improved, x), grad, s["grad_best"])
    loss_best = jnp.where(improved, loss_i, s["loss_best"])
    loss_steps = s["loss_steps"].at[i].set(loss_i)

    # Step-size check (only at checkpoints): count loss increases over the last `window` steps.
    increases = loss_steps > jnp.roll(loss_steps, 1, axis=0)
    steps = jnp.arange(n_iter)[:, None]
    in_window = (steps <= i) & (steps > i - window[i])
    n_increase = jnp.sum(increases & in_window, axis=0)
    oscillating = n_increase <= 0.75 * window[i]
    no_improvement = ~s["reduced_last_check"] & (s["loss_best_last_check"] >= loss_best)
    reduce = is_checkpoint[i] & active & (oscillating | no_improvement)
    step_size = jnp.where(_bshape(reduce, x), s["step_size"] / 2.0, s["step_size"])
    x_next = jnp.where(_bshape(reduce, x), x_best, x_new)
    grad_next = jnp.where(_bshape(reduce, x), grad_best, grad)
    reduced_last_check = jnp.where(is_checkpoint[i], reduce, s["reduced_last_check"])
    loss_best_last_check = jnp.where(is_checkpoint[i], loss_best, s["loss_best_last_check"])
    topk, sp_old = s["topk"], s["sp_old"]
    if norm == "l1":
      # l1-APGD's rule: if the best point got much sparser since the last check, restart from
      # it with the full step; otherwise shrink the step (within [eps/10, eps]). The number of
      # coordinates moved follows the sparsity of the best point.
      check = is_checkpoint_l1[i]
      sp_curr = l1.l0(x_best - x)
      sparser = check & active & (sp_curr / sp_old < 0.95)
      new_step = jnp.clip(jnp.where(_bshape(sparser, x), eps_b, s["step_size"] / 1.5),
                          eps_b / 10.0, eps_b)
      step_size = jnp.where(check, new_step, s["step_size"])
      topk = jnp.where(check, sp_curr / n_features / 1.5, topk)
      sp_old = jnp.where(check, sp_curr, sp_old)
      x_next = jnp.where(_bshape(sparser, x), x_best, x_new)
      grad_next = jnp.where(_bshape(sparser, x), grad_best, grad)

    # Samples that are already broken (misclassification losses) are frozen.
    freeze = lambda new, old: jnp.where(_bshape(active, new) if new.ndim > 1 else active, new, old)
    return dict(
        i=i + 1, x_adv=freeze(x_next, s["x_adv"]), x_prev=freeze(s["x_adv"], s["x_prev"]),
        grad=freeze(grad_next, s["grad"]), x_best=x_best, grad_best=grad_best, loss_best=loss_best,
        x_best_adv=x_best_adv, robust=robust, step_size=step_size, loss_steps=loss_steps,
        loss_best_last_check=loss_best_last_check, reduced_last_check=reduced_last_check,
        topk=topk, sp_old=sp_old)

  s = jax.lax.while_loop(cond, body, state)
  x_out = s["x_best"] if best_loss else s["x_best_adv"]
  return ApgdResult(x_out, s["robust"], s["loss_best"])


def _fold(keys, i):
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)


def target_classes(logits: jax.Array, n_target_classes: int) -> jax.Array:
  """[T, B] targets of APGD-T / FAB-T: the 2nd, 3rd, ... most likely classes at the clean point.

  T = min(n_target_classes, C - 1), as AutoAttack's ``sort()[1][:, -target_class]`` for
  target_class = 2 .. n_target_classes + 1; asking for more targets than the C - 1 other classes
  targets all of them (AutoAttack warns there, `checks.check_n_classes`, and then fails).
  """
  order = jnp.argsort(-logits, axis=-1)
  n = min(n_target_classes, logits.shape[-1] - 1)
  return order[:, 1:1 + n].T


def apgd_run(logits_fn, x, y, *, key, eps, norm="linf", n_iter=40, n_restarts=1, loss="ce",
             n_target_classes=9, randomized=False, eot_iter=1, active=None, only_target=None):
  """APGD with restarts (and target classes); returns an ApgdResult. See `apgd` for arguments.

  ``active`` [B] bool: attack only these samples; the others come back with ``robust=False``
  (for the caller to ignore). ``only_target`` (an int t < T): run only target t's restarts,
  with the keys and target of the full run (AutoAttack's ensemble runs the targets one by one
  on the survivors).

  Run r for target t uses keys ``fold_in(example_key, t * n_restarts + r)`` (t = 0 for the
  untargeted losses). For misclassification losses a run only attacks the samples no earlier
  run has broken, and a broken sample keeps its point; for ``conf`` the highest-loss point over
  restarts wins.
  """
  norm = common.check_norm(norm, common.APGD_NORMS)
  common.check_loss(loss)
  common.validate_inputs(x, y, eps, "apgd", norm)
  if n_iter < 1 or n_restarts < 1 or eot_iter < 1 or n_target_classes < 1:
    raise UserError("apgd: n_iter, n_restarts, eot_iter and n_target_classes must be >= 1")
  best_loss = loss == "conf"
  keys = common.example_keys(key, x.shape[0])
  clean_keys = _fold(keys, 2**30) if randomized else None
  logits_fn, clean_logits, _ = common.take_model(
      logits_fn, x, y, name="apgd", keys=clean_keys, randomized=randomized,
      min_classes=common.MIN_CLASSES[loss], why=f"loss {loss}")
  run = functools.partial(apgd_single_run, logits_fn, x, y, eps=eps, norm=norm, n_iter=n_iter,
                          loss=loss, best_loss=best_loss, randomized=randomized,
                          eot_iter=eot_iter)
  if loss == "dlr-targeted":
    if clean_logits is None:
      clean_logits = logits_fn(x, clean_keys) if randomized else logits_fn(x)
    targets = target_classes(clean_logits, n_target_classes)
  else:
    targets = jnp.zeros((1, x.shape[0]), jnp.int32)  # unused by the untargeted losses
  y_target_of = (lambda t: targets[t]) if loss == "dlr-targeted" else (lambda t: None)

  def combine(result, j):
    """Runs (target, restart) number j and merges it into `result`."""
    t = j // n_restarts
    new = run(_fold(keys, j), y_target=y_target_of(t),
              active=None if best_loss else result.robust)
    take = (new.best_loss > result.best_loss) if best_loss else (result.robust & ~new.robust)
    return ApgdResult(jnp.where(_bshape(take, x), new.x_adv, result.x_adv),
                      result.robust & new.robust, jnp.maximum(result.best_loss, new.best_loss))

  batch = x.shape[0]
  robust0 = jnp.ones((batch,), bool) if active is None else jnp.asarray(active, bool)
  result = ApgdResult(x, robust0, jnp.full((batch,), -jnp.inf, x.dtype))
  # A fori_loop (not a Python loop) over targets and restarts: one compiled run, not nine.
  first, stop = 0, targets.shape[0] * n_restarts
  if only_target is not None:
    first, stop = only_target * n_restarts, (only_target + 1) * n_restarts
  return jax.lax.fori_loop(first, stop, lambda j, r: combine(r, j), result)


def apgd(logits_fn, x, y, *, key, eps, norm: str = "linf", n_iter: int = 40,
         n_restarts: int = 1, loss: str = "ce", n_target_classes: int = 9,
         randomized: bool = False, eot_iter: int = 1) -> jax.Array:
  """APGD; returns x_adv [B, ...] inside the eps-ball and [0, 1].

  Args:
    logits_fn: batch [B, ...] -> logits [B, C], C >= 2. An NNX module runs as an eval-mode
      copy and is never changed (docs/design.md, Contracts); a function is used as given. With
      ``randomized=True`` it is ``(x [B, ...], keys [B]) -> logits``, see
      `common.per_example_randomized`.
    x: [B, ...] clean inputs in [0, 1].
    y: [B] int32; pass the model's own clean prediction for label-free robustness.
    key: a key or [B] per-example keys (results do not depend on the batch then).
    eps: radius (float or [B]).
    norm: ``"linf"``, ``"l2"`` or ``"l1"`` (l1-APGD: sparse steps, no momentum, step eps,
      checks every 4% of the iterations driven by the sparsity of the best point).
    n_iter: iterations per restart (40 in the paper's evaluation, 100 in AutoAttack).
    n_restarts: random restarts (per target class for ``dlr-targeted``).
    loss: ``"ce"``, ``"dlr"`` (needs >= 3 classes), ``"dlr-targeted"`` (>= 4 classes; APGD-T:
      one run per target class, the
      2nd .. (n_target_classes+1)-th most likely classes at x) or ``"conf"`` (APGDconf,
      eq. 17; returns the highest-loss point).
    n_target_classes: number of target classes for ``dlr-targeted`` (9 in AutoAttack; >= 1;
      at most the C - 1 other classes are targeted).
    randomized: the model is randomized; gradients average ``eot_iter`` draws (EOT).
    eot_iter: draws per gradient when randomized (20 in AutoAttack's ``rand`` version).

  Raises:
    UserError: bad inputs; labels outside 0..C-1; a model whose output is not [B, C] logits
      with C >= 2 (or too few classes for the loss: dlr 3, dlr-targeted 4, AutoAttack's rule),
      NaN logits, or whose forward pass changes its state.
  """
  if not randomized and compiled.is_eager(x, y, key, eps):   # compiled once per bucket
    return compiled.call(apgd, logits_fn, x, y, key=key, eps=eps, name="apgd", norm=norm,
                         min_classes=common.MIN_CLASSES.get(loss, 2), why=f"loss {loss}",
                         n_iter=n_iter,
                         n_restarts=n_restarts, loss=loss, n_target_classes=n_target_classes)
  return apgd_run(logits_fn, x, y, key=key, eps=eps, norm=norm, n_iter=n_iter,
                  n_restarts=n_restarts, loss=loss, n_target_classes=n_target_classes,
                  randomized=randomized, eot_iter=eot_iter).x_adv
