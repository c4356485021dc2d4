"""FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack"), the targeted version AutoAttack runs: minimal-norm adversarial points.

    x_adv = fab(logits_fn, x, y, key=key, eps=8/255)               # FAB-T, Linf, 9 targets
    res = fab_run(logits_fn, x, y, key=key, norm="l2")             # minimal-norm mode
    res.x_adv, res.dist                                           # best point, its norm (inf: none)

For target t, each step linearises ``g = z_t - z_y`` at the iterate x1 and projects both x1 and
the clean point x0 onto the linearised boundary {g = 0} within the box [0, 1] (closed-form
minimal-norm projections, `project_hyperplane`). The step is the convex combination
``(1 - a)(x1 + eta d1) + a (x0 + eta d2)`` with ``a = min(|d1| / (|d1| + |d2|), alpha_max)``,
which biases the search towards x0; an adversarial iterate is recorded if it is the closest
so far and then pulled back towards x0 by ``beta``. AutoAttack's defaults: 100 iterations,
``alpha_max = 0.1, eta = 1.05, beta = 0.9``, target classes the 2nd .. 10th most likely at x0,
no random start in the first restart.

With ``eps`` given (AutoAttack mode), a sample counts as broken once a point within eps is
found; it is then frozen, later targets skip it, and the loop exits when every sample is
broken, none of which changes which samples are broken.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jax_abstain.attacks import common, compiled
from jax_abstain.attacks.apgd import target_classes
from jax_abstain.errors import UserError


class FabResult(NamedTuple):
  x_adv: jax.Array  # [B, ...] closest adversarial point found (x where none was found)
  dist: jax.Array   # [B] its distance to x in the attack's norm (inf where none was found)


def project_hyperplane(t: jax.Array, w: jax.Array, b: jax.Array, norm: str) -> jax.Array:
  """Minimal-norm d with ``w . (t + d) = b`` and ``t + d`` in [0, 1]^D, per row.

  Args:
    t: [B, D] points in [0, 1]. w: [B, D] normals. b: [B] offsets. norm: "linf" or "l2".

  Returns:
    d [B, D]. If the hyperplane does not meet the box, the box corner closest to it.

  After flipping signs so that w . t must grow by c > 0, coordinate i can contribute at most
  ``|w_i| room_i`` (room_i: distance to the box face it moves to). For a norm budget lam the
  achievable growth is ``h(lam) = sum_i min(lam_i-term, |w_i| room_i)``, piecewise linear and
  non-decreasing with breakpoints bp_i (Linf: room_i; L2, where d_i = lam w_i: room_i/|w_i|);
  sorting the breakpoints gives the segment where h(lam) = c and lam in closed form.
  """
  c = b - jnp.sum(w * t, axis=-1)
  w = w * jnp.where(c < 0, -1.0, 1.0)[:, None]
  c = jnp.abs(c)
  aw = jnp.abs(w)
  room = jnp.where(w > 0, 1.0 - t, t)
  sat = aw * room
  if norm == "linf":
    bp, slope = room, aw
  else:
    bp = jnp.where(aw > 0, room / jnp.maximum(aw, 1e-30), 1e30)
    slope = aw ** 2
  order = jnp.argsort(bp, axis=-1)
  bp_s, sat_s, slope_s = (jnp.take_along_axis(a, order, -1) for a in (bp, sat, slope))
  prev_sat = jnp.cumsum(sat_s, -1) - sat_s
  tail_slope = jnp.sum(slope_s, -1, keepdims=True) - jnp.cumsum(slope_s, -1) + slope_s
  h_at_bp = prev_sat + bp_s * tail_slope
  k = jnp.sum(h_at_bp < c[:, None], axis=-1)
  feasible = k < t.shape[-1]
  kc = jnp.minimum(k, t.shape[-1] - 1)[:, None]
  lam = ((c - jnp.take_along_axis(prev_sat, kc, -1)[:, 0])
         / jnp.maximum(jnp.take_along_axis(tail_slope, kc, -1)[:, 0], 1e-30))
  lam = jnp.where(feasible, jnp.maximum(lam, 0.0), jnp.inf)[:, None]
  move = jnp.minimum(lam, room) if norm == "linf" else jnp.minimum(lam * aw, room)
  return jnp.where(aw > 0, jnp.sign(w) * move, 0.0)


def _norm(v, norm):
  return jnp.max(jnp.abs(v), -1) if norm == "linf" else jnp.sqrt(jnp.sum(v ** 2, -1))


def fab_single_run(logits_fn, x, y, y_target, start, active, *, eps, norm, n_iter,
                   alpha_max, eta, beta):
  """One FAB-T run from ``start`` towards ``y_target`` (all [B]-batched, traceable).

  Returns (adv [B, D], dist [B]) over the flattened inputs; dist is inf where no adversarial
  point was found.
  """
  shape, batch = x.shape, x.shape[0]
  x0 = x.reshape(batch, -1)
  fn = lambda z: logits_fn(z.reshape(shape))

  def diff(z):
    logits = fn(z)
    g = (jnp.take_along_axis(logits, y_target[:, None], -1)[:, 0]
         - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])
    return g.sum(), g

  def cond(s):
    i, _, _, dist = s
    more = i < n_iter
    return more if eps is None else more & jnp.any(active & (dist > eps))

  def body(s):
    i, x1, adv, dist = s
    todo = active if eps is None else active & (dist > eps)
    grad, df = jax.grad(diff, has_aux=True)(x1)
    b = -df + jnp.sum(grad * x1, -1)
    d = project_hyperplane(jnp.concatenate([x1, x0]), jnp.concatenate([grad, grad]),
                           jnp.concatenate([b, b]), norm)
    d1, d2 = d[:batch], d[batch:]
    a1 = jnp.maximum(_norm(d1, norm), 1e-8)
    a2 = jnp.maximum(_norm(d2, norm), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    x_new = jnp.clip((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha, 0.0, 1.0)
    is_adv = jnp.argmax(fn(x_new), -1) != y
    t = _norm(x_new - x0, norm)
    better = todo & is_adv & (t < dist)
    adv = jnp.where(better[:, None], x_new, adv)
    dist = jnp.where(better, t, dist)
    # Pulling an adversarial iterate back towards x0 lets the next step land closer to it.
    x_new = jnp.where(is_adv[:, None], x0 + (x_new - x0) * beta, x_new)
    return i + 1, jnp.where(todo[:, None], x_new, x1), adv, dist

  init = (jnp.int32(0), start.reshape(batch, -1), x0, jnp.full((batch,), jnp.inf, x.dtype))
  _, _, adv, dist = jax.lax.while_loop(cond, body, init)
  return adv, dist


def _random_start(key, x, radius, norm):
  """FAB's restart point: x + radius/2 * t/|t| (t uniform for Linf, normal for L2), clipped."""
  t = (jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) if norm == "linf"
       else jax.random.normal(key, x.shape, x.dtype))
  n = jnp.max(jnp.abs(t)) if norm == "linf" else jnp.sqrt(jnp.sum(t ** 2))
  return jnp.clip(x + 0.5 * radius * t / jnp.maximum(n, 1e-12), 0.0, 1.0)


def fab_run(logits_fn, x, y, *, key, eps=None, norm="linf", n_iter=100, n_restarts=1,
            n_target_classes=9, alpha_max=0.1, eta=1.05, beta=0.9, active=None,
            only_target=None) -> FabResult:
  """FAB-T over target classes and restarts; returns the closest adversarial point per sample.

  See `fab` for the arguments; ``eps=None`` runs the pure minimal-norm search (every target,
  every iteration). ``active`` [B] bool restricts the attack to those samples. Samples already
  misclassified at x get ``x_adv = x, dist = 0``. ``only_target`` (an int t): run only target
  t's restarts, with the keys and target of the full run.
  """
  norm = common.check_norm(norm)
  common.validate_inputs(x, y, 1.0 if eps is None else eps, "fab", None if eps is None else norm)
  if n_iter < 1 or n_restarts < 1 or n_target_classes < 1:
    raise UserError("fab: n_iter, n_restarts and n_target_classes must be >= 1")
  batch = x.shape[0]
  keys = common.example_keys(key, batch)
  eps_b = None if eps is None else jnp.asarray(eps, x.dtype) * jnp.ones((batch,), x.dtype)
  logits_fn, logits, _ = common.take_model(logits_fn, x, y, name="fab")
  logits = logits_fn(x) if logits is None else logits
  correct = jnp.argmax(logits, -1) == y
  if active is not None:
    correct = correct & active
  adv = x.reshape(batch, -1)
  dist = jnp.where(correct, jnp.inf, 0.0).astype(x.dtype)
  targets = target_classes(logits, n_target_classes)

  def one(j, carry):
    """Target j // n_restarts, restart j % n_restarts; keeps the closer point."""
    adv, dist = carry
    r = j % n_restarts
    radius = jnp.minimum(dist, 1.0 if eps is None else eps_b)
    rkeys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, j)
    rand = jax.vmap(_random_start, in_axes=(0, 0, 0, None))(rkeys, x, radius, norm)
    # The first restart starts at x itself (AutoAttack's use_rand_start=False).
    start = jnp.where(r == 0, x, rand)
    todo = correct if eps is None else correct & (dist > eps_b)
    new_adv, new_dist = fab_single_run(
        logits_fn, x, y, targets[j // n_restarts], start, todo, eps=eps_b, norm=norm,
        n_iter=n_iter, alpha_max=alpha_max, eta=eta, beta=beta)
    better = todo & (new_dist < dist)
    return jnp.where(better[:, None], new_adv, adv), jnp.where(better, new_dist, dist)

  # fori_loop over (target, restart): one compiled FAB run instead of nine.
  first, stop = 0, targets.shape[0] * n_restarts
  if only_target is not None:
    first, stop = only_target * n_restarts, (only_target + 1) * n_restarts
  adv, dist = jax.lax.fori_loop(first, stop, one, (adv, dist))
  return FabResult(adv.reshape(x.shape), dist)


def fab(logits_fn, x, y, *, key, eps, norm: str = "linf", n_iter: int = 100,
        n_restarts: int = 1, n_target_classes: int = 9, alpha_max: float = 0.1,
        eta: float = 1.05, beta: float = 0.9) -> jax.Array:
  """FAB-T; returns x_adv in the eps-ball and [0, 1] (x itself where nothing within eps).

  Args:
    logits_fn: batch [B, ...] -> logits [B, C], C >= 2 (differentiable). An NNX module runs
      as an eval-mode copy and is never changed (docs/design.md, Contracts).
    x: [B, ...] inputs in [0, 1].
    y: [B] int32 labels (or the clean prediction).
    key: a key or [B] per-example keys (used by restarts after the first).
    eps: radius (float or [B]); a point farther than eps does not count.
    norm: ``"linf"`` or ``"l2"``.
    n_iter: iterations per target and restart (100 in AutoAttack).
    n_restarts: restarts per target; the first starts at x, later ones at random points.
    n_target_classes: the 2nd .. (n+1)-th most likely classes are targeted (9 in AutoAttack;
      at most the C - 1 other classes, so one target on a 2-class model).
    alpha_max, eta, beta: FAB's step parameters.

  Returns:
    x_adv [B, ...]; ``argmax logits_fn(x_adv) != y`` exactly for the samples broken within eps.

  Raises:
    UserError: bad inputs, labels outside 0..C-1, a model output that is not finite [B, C]
      logits with C >= 2, or a forward pass that changes state.
  """
  if compiled.is_eager(x, y, key, eps):   # compiled once per batch-size bucket
    return compiled.call(fab, logits_fn, x, y, key=key, eps=eps, name="fab", norm=norm,
                         n_iter=n_iter, n_restarts=n_restarts, n_target_classes=n_target_classes,
                         alpha_max=alpha_max, eta=eta, beta=beta)
  res = fab_run(logits_fn, x, y, key=key, eps=eps, norm=norm, n_iter=n_iter,
                n_restarts=n_restarts, n_target_classes=n_target_classes,
                alpha_max=alpha_max, eta=eta, beta=beta)
  eps_b = jnp.asarray(eps, x.dtype) * jnp.ones((x.shape[0],), x.dtype)
  ok = (res.dist <= eps_b).reshape((-1,) + (1,) * (x.ndim - 1))
  # The projection puts the point exactly on the radius up to rounding; re-project for safety.
  return jnp.where(ok, common.project(res.x_adv, x, eps, norm), x)
