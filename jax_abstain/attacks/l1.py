"""L1 pieces of APGD (Croce & Hein 2021, "Mind the box: l1-APGD"): the projection onto the
L1 ball intersected with the [0, 1] box, the sparse step and the sparsity-driven step-size rule.

    delta = project_l1_box(x, delta_u, eps)           # ||delta||_1 <= eps, x + delta in [0, 1]
    x_new = sparse_step(x_adv, grad, x, step, topk, eps)

Inputs are flattened per example; shapes are [B, ...] in, [B, ...] out.
"""
import jax
import jax.numpy as jnp
import numpy as np


def _flat(v):
  return v.reshape(v.shape[0], -1)


def project_l1_box(x: jax.Array, delta_u: jax.Array, eps) -> jax.Array:
  """Euclidean projection of delta_u onto {d : ||d||_1 <= eps, x + d in [0, 1]}.

  Args:
    x: [B, ...] centres in [0, 1]. delta_u: [B, ...] perturbations. eps: scalar or [B].

  Returns:
    delta [B, ...] (for a radius shrunk by a relative 1e-5 plus D float32 ulps, see below).
    The problem is separable with one multiplier lam >= 0:
    ``d_i = sign(u_i) clip(|u_i| - lam, 0, cap_i)`` with cap_i the room to the box face u_i
    points at. ``g(lam) = sum_i clip(|u_i| - lam, 0, cap_i)`` is piecewise linear and
    decreasing, with breakpoints |u_i| - cap_i (a coordinate leaves its cap) and |u_i| (it
    reaches 0); lam is read off the sorted breakpoints in closed form.
  """
  shape = x.shape
  xf, u = _flat(x), _flat(delta_u)
  a = jnp.abs(u)
  cap = jnp.where(u > 0, 1.0 - xf, xf)
  eps = jnp.asarray(eps, x.dtype) * jnp.ones((x.shape[0],), x.dtype)
  # Forming x + d and measuring it again rounds each coordinate (about one ulp of 1 each), and
  # an L1 norm adds those errors up over all D coordinates: aim a little inside the ball so
  # the point the caller sees is inside it.
  eps = jnp.maximum(eps * (1.0 - 1e-5) - xf.shape[-1] * jnp.finfo(x.dtype).eps, 0.0)
  # Breakpoints and the change of g's slope at each (-1 when a term starts to shrink, +1 when
  # it reaches zero).
  events = jnp.concatenate([a - cap, a], axis=-1)
  dslope = jnp.concatenate([-jnp.ones_like(a), jnp.ones_like(a)], axis=-1)
  order = jnp.argsort(events, axis=-1)
  e = jnp.take_along_axis(events, order, -1)
  slope = jnp.cumsum(jnp.take_along_axis(dslope, order, -1), -1)   # slope on [e_k, e_{k+1}]
  g0 = jnp.sum(cap, -1, keepdims=True)                            # g at e_0 (all capped)
  g = g0 + jnp.concatenate([jnp.zeros_like(g0), jnp.cumsum(slope[:, :-1] * jnp.diff(e, axis=-1), -1)], -1)
  k = jnp.sum(g > eps[:, None], axis=-1)                          # g(e_k) > eps for k < K
  km1 = jnp.clip(k - 1, 0, e.shape[-1] - 1)[:, None]
  g_k, e_k, s_k = (jnp.take_along_axis(v, km1, -1)[:, 0] for v in (g, e, slope))
  lam = e_k + (g_k - eps) / jnp.maximum(-s_k, 1e-12)
  inside = jnp.sum(jnp.minimum(a, cap), -1) <= eps                 # lam = 0 is feasible
  lam = jnp.where(inside, 0.0, jnp.maximum(lam, 0.0))[:, None]
  d = jnp.sign(u) * jnp.clip(a - lam, 0.0, cap)
  return d.reshape(shape)


def random_start(keys: jax.Array, x: jax.Array, eps) -> jax.Array:
  """l1-APGD's start: x + P(t), t ~ N(0, I) projected onto the L1 ball and the box."""
  t = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
  return jnp.clip(x + project_l1_box(x, t, eps), 0.0, 1.0)


def sparse_step(x_adv, grad, x, step_size, topk, eps):
  """Moves along the sign of the top-``topk`` fraction of gradient coordinates (by magnitude),
  total L1 length ``step_size``, then projects onto the L1 ball and box around x.

  step_size: [B, 1, ...]; topk: [B] fractions in (0, 1].
  """
  n = int(np.prod(x.shape[1:]))
  g = _flat(grad)
  sorted_abs = jnp.sort(jnp.abs(g), -1)
  idx = jnp.clip(((1.0 - topk) * n).astype(jnp.int32), 0, n - 1)[:, None]
  thr = jnp.take_along_axis(sorted_abs, idx, -1)
  direction = jnp.sign(g * (jnp.abs(g) >= thr))
  direction = direction / (jnp.sum(jnp.abs(direction), -1, keepdims=True) + 1e-10)
  x1 = x_adv + step_size * direction.reshape(x.shape)
  return jnp.clip(x + project_l1_box(x, x1 - x, eps), 0.0, 1.0)


def l0(v: jax.Array) -> jax.Array:
  return jnp.sum(_flat(v) != 0, -1).astype(v.dtype)


def checkpoint_schedule(n_iter: int) -> np.ndarray:
  """[n_iter] bool: l1-APGD checks every ``max(int(0.04 n_iter), 1)`` iterations."""
  k = max(int(0.04 * n_iter), 1)
  return (np.arange(n_iter) + 1) % k == 0
