"""Square Attack (Andriushchenko et al. 2020): score-based random search, no gradients.

    x_adv = square(logits_fn, x, y, key=key, eps=8/255)                    # Linf, 5000 queries
    x_adv = square(logits_fn, x, y, key=key, eps=0.5, norm="l2", n_queries=1000)

Each query changes one square window of the current perturbation (Linf: every pixel of the
window to a vertex +-eps per channel; L2: mass moved between two windows with a pseudo-Gaussian
profile) and keeps the change if the margin ``z_y - max_{i != y} z_i`` decreases. The window
side follows AutoAttack's standard schedule (``p_init = 0.8`` halved after query 10, 50, 200,
500, 1000, 2000, 4000, 6000 and 8000, counted on the raw query index as AutoAttack builds
Square with ``resc_schedule=False``); ``rescale_schedule=True`` stretches the same schedule
over ``n_queries`` as if it were 10,000 (the original Square code's option). All queries run in one
`lax.while_loop` that stops when every sample is broken: windows are masks over the whole
image (their side is a traced value read from the schedule table), so changing the side
needs no new shapes and no recompilation. Window positions and signs come from
``fold_in(example_key, query)``, so a sample's search does not depend on its batch (AutoAttack
draws one window position for the whole batch; per-example draws are what the original Square
code does). A window's corner is uniform in 0 .. h - s (every pixel can be chosen); AutoAttack's
``random_int(0, h - s)`` truncates a uniform draw to 0 .. h - s - 1, so its windows never reach
the last row and column of the image, which keep their initial values
(tests/attacks_golden_test.py compares the two on a model that ignores them).

Inputs are NHWC images [B, H, W, C]; feature vectors [B, D] are searched as a 1 x D image.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jax_abstain.attacks import common, compiled
from jax_abstain.errors import UserError


class SquareResult(NamedTuple):
  x_adv: jax.Array     # [B, ...]
  robust: jax.Array    # [B] bool: the margin at x_adv is still positive
  n_queries: jax.Array  # [B] int32 model queries spent per sample


def p_selection(it: int, n_queries: int, p_init: float, rescale: bool = False) -> float:
  """Fraction of pixels changed at query ``it`` (0-based), AutoAttack's ``p_selection``.

  p_init is halved after query 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of the raw
  index (AutoAttack's standard version, ``resc_schedule=False``); with ``rescale`` the index
  is first mapped to ``int(it / n_queries * 10000)`` (``resc_schedule=True``).
  """
  if rescale:
    it = int(it / n_queries * 10000)
  for bound, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16),
                     (200, 8), (50, 4), (10, 2)):
    if it > bound:
      return p_init / div
  return p_init


def window_schedule(n_queries: int, p_init: float, h: int, w: int, c: int, norm: str,
                    rescale: bool = False):
  """[(start, stop, (sh, sw))]: runs of queries with the same static window shape."""
  n_features = h * w * c
  phases = []
  for it in range(n_queries):
    p = p_selection(it, n_queries, p_init, rescale)
    if h == 1:  # a feature vector: a window of p * D coordinates
      side = (1, min(max(int(round(p * n_features / c)), 1 if norm == "linf" else 2), w))
    else:
      s = int(round(np.sqrt(p * n_features / c)))
      s = max(s, 1) if norm == "linf" else max(s, 3) + (max(s, 3) % 2 == 0)
      side = (min(s, h), min(s, w))
    if phases and phases[-1][2] == side:
      phases[-1][1] = it + 1
    else:
      phases.append([it, it + 1, side])
  return [tuple(p) for p in phases]


def _pseudo_gaussian(a: int, b: int) -> np.ndarray:
  """[a, b] bump made of nested rectangles weighted 1/(k+1)^2, unit L2 norm (AutoAttack)."""
  delta = np.zeros((a, b))
  ca, cb = a // 2, b // 2
  for k in range(max(ca + 1, cb + 1)):
    delta[max(ca - k, 0):min(ca - k + 2 * k + 1, a),
          max(cb - k, 0):min(cb - k + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
  return delta / np.sqrt((delta ** 2).sum())


def meta_pseudo_gaussian(sh: int, sw: int) -> np.ndarray:
  """[sh, sw] window profile: a bump and a negated bump side by side, unit L2 norm."""
  if sh >= 2:
    top = _pseudo_gaussian(sh // 2, sw)
    delta = np.concatenate([top, -_pseudo_gaussian(sh - sh // 2, sw)], axis=0)
  else:
    delta = np.concatenate([_pseudo_gaussian(sh, sw // 2),
                            -_pseudo_gaussian(sh, sw - sw // 2)], axis=1)
  return (delta / np.sqrt((delta ** 2).sum())).astype(np.float32)


def _signs(key, shape, dtype):
  return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0).astype(dtype)


def _margin(logits_fn, x, y):
  logits = logits_fn(x)
  z_y = jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
  other = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return z_y - jnp.max(other, axis=-1)


def _tables(n_queries, p_init, h, w, c, norm, rescale):
  """Per-query window sides [n_queries, 2] and, per query, an index into L2 profile canvases
  [P, h, w] (each profile in the top-left corner; its transpose in a second table)."""
  sides = np.zeros((n_queries, 2), np.int32)
  index = np.zeros(n_queries, np.int32)
  canvases, canvases_t = [], []
  for p_i, (start, stop, (sh, sw)) in enumerate(
      window_schedule(n_queries, p_init, h, w, c, norm, rescale)):
    sides[start:stop] = (sh, sw)
    index[start:stop] = p_i
    canvas = np.zeros((h, w), np.float32)
    canvas_t = np.zeros((h, w), np.float32)
    if norm == "l2":
      prof = meta_pseudo_gaussian(sh, sw)
      canvas[:sh, :sw] = prof
      canvas_t[:sh, :sw] = prof.T if sh == sw else prof
    canvases.append(canvas)
    canvases_t.append(canvas_t)
  return (jnp.asarray(sides), jnp.asarray(index), jnp.asarray(np.stack(canvases)),
          jnp.asarray(np.stack(canvases_t)))


def _window(key, h, w, sh, sw):
  """Random top-left corner and the [h, w, 1] bool mask of an sh x sw window (traced sides)."""
  k1, k2 = jax.random.split(key)
  vh = jax.random.randint(k1, (), 0, h - sh + 1)
  vw = jax.random.randint(k2, (), 0, w - sw + 1)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  mask = (rows >= vh) & (rows < vh + sh) & (cols >= vw) & (cols < vw + sw)
  return vh, vw, mask[:, :, None]


def _l2_init(key, x, eps):
  """AutoAttack's L2 start: a grid of s x s pseudo-Gaussian blocks (s = H // 5), each randomly
  transposed and signed per channel, scaled to norm eps. Built as one tensor (not a Python loop
  of updates) to keep compilation small."""
  h, w, c = x.shape
  s = h // 5
  start = (h - 5 * s) // 2
  nb_h, nb_w = ((h - start) // s, (w - start) // s) if s else (0, 0)
  if nb_h < 1 or nb_w < 1:
    delta = jax.random.normal(key, x.shape, x.dtype)
  else:
    k1, k2 = jax.random.split(key)
    prof = jnp.asarray(meta_pseudo_gaussian(s, s), x.dtype)
    flip = jax.random.bernoulli(k1, 0.5, (nb_h, nb_w))[:, :, None, None]
    blocks = jnp.where(flip, prof.T, prof)[..., None] * _signs(k2, (nb_h, nb_w, 1, 1, c), x.dtype)
    grid = blocks.transpose(0, 2, 1, 3, 4).reshape(nb_h * s, nb_w * s, c)
    delta = jnp.zeros_like(x).at[start:start + nb_h * s, start:start + nb_w * s].set(grid)
  delta = delta / jnp.maximum(jnp.sqrt(jnp.sum(delta ** 2)), 1e-12)
  return jnp.clip(x + eps * delta, 0.0, 1.0)


def _linf_proposal(key, xb, x0, eps, sh, sw, canvas, canvas_t):
  """One example [H, W, C]: a window of xb set to the vertex x0 +- eps (sign per channel)."""
  del canvas, canvas_t
  h, w, c = x0.shape
  k1, k2 = jax.random.split(key)
  _, _, mask = _window(k1, h, w, sh, sw)
  vertex = jnp.clip(jnp.clip(xb + 2.0 * eps * _signs(k2, (1, 1, c), x0.dtype), x0 - eps, x0 + eps),
                    0.0, 1.0)
  return jnp.where(mask, vertex, xb)


def _l2_proposal(key, xb, x0, eps, sh, sw, canvas, canvas_t):
  """One example [H, W, C]: AutoAttack's L2 update (move mass from window 2 into window 1)."""
  h, w, c = x0.shape
  ks = jax.random.split(key, 4)
  vh, vw, mask1 = _window(ks[0], h, w, sh, sw)
  _, _, mask2 = _window(ks[1], h, w, sh, sw)
  delta = xb - x0
  win1 = jnp.where(mask1, delta, 0.0)
  norm_win1 = jnp.sqrt(jnp.sum(win1 ** 2, axis=(0, 1), keepdims=True))
  norm_image = jnp.sqrt(jnp.sum(delta ** 2))
  norm_windows = jnp.sqrt(jnp.sum(jnp.where(mask1 | mask2, delta, 0.0) ** 2))
  prof = jnp.where(jax.random.bernoulli(ks[2]), canvas_t, canvas)
  prof = jnp.roll(prof, (vh, vw), axis=(0, 1))[:, :, None]  # no wrap: vh <= h - sh
  new = prof * _signs(ks[3], (1, 1, c), delta.dtype) + win1 / (1e-12 + norm_win1)
  # Rescale so the window carries its old mass plus whatever budget is still unused.
  budget = jnp.sqrt(jnp.maximum(eps ** 2 - norm_image ** 2, 0.0) / c + norm_windows ** 2)
  new = new / (1e-12 + jnp.sqrt(jnp.sum(new ** 2, axis=(0, 1), keepdims=True))) * budget
  delta = jnp.where(mask1, new, jnp.where(mask2, 0.0, delta))
  delta = delta / jnp.maximum(jnp.sqrt(jnp.sum(delta ** 2)), 1e-12) * eps
  return jnp.clip(x0 + delta, 0.0, 1.0)


def square_run(logits_fn, x, y, *, key, eps, norm="linf", n_queries=5000, p_init=0.8,
               rescale_schedule=False, active=None) -> SquareResult:
  """Square Attack; returns a SquareResult. See `square` for the arguments.

  ``active`` [B] bool restricts the search to those samples (the others are left at their
  start point and reported as not robust, for the caller to ignore).
  """
  norm = common.check_norm(norm)
  common.validate_inputs(x, y, eps, "square", norm)
  if n_queries < 1 or not 0.0 < p_init <= 1.0:
    raise UserError("square: n_queries must be >= 1 and p_init in (0, 1]")
  batch, shape = x.shape[0], x.shape
  if x.ndim == 2:
    xi = x.reshape(batch, 1, shape[1], 1)
  elif x.ndim == 4:
    xi = x
  else:
    raise UserError(f"square: x must be [B, H, W, C] or [B, D], got shape {shape}")
  keys = common.example_keys(key, batch)
  logits_fn, _, _ = common.take_model(logits_fn, x, y, name="square")
  _, h, w, c = xi.shape
  eps_b = jnp.asarray(eps, x.dtype) * jnp.ones((batch,), x.dtype)
  fn = lambda z: logits_fn(z.reshape(shape))

  init_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 2**30)
  if norm == "linf":  # vertical stripes of +-eps, one sign per column and channel
    stripes = jax.vmap(lambda k: _signs(k, (1, w, c), x.dtype))(init_keys)
    x_best = jnp.clip(xi + eps_b[:, None, None, None] * stripes, 0.0, 1.0)
    propose = _linf_proposal
  else:
    x_best = jax.vmap(_l2_init)(init_keys, xi, eps_b)
    propose = _l2_proposal
  margin = _margin(fn, x_best, y)
  if active is not None:
    margin = jnp.where(active, margin, -1.0)
  state = (x_best, margin, margin, jnp.ones((batch,), jnp.int32))

  sides, index, canvases, canvases_t = _tables(n_queries, p_init, h, w, c, norm,
                                                bool(rescale_schedule))

  def cond(carry):
    i, (_, margin_min, _, _) = carry
    return (i < n_queries) & jnp.any(margin_min > 0)

  def body(carry):
    i, (x_best, margin_min, loss_min, n_q) = carry
    todo = margin_min > 0
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
    sh, sw = sides[i, 0], sides[i, 1]
    canvas, canvas_t = canvases[index[i]], canvases_t[index[i]]
    x_new = jax.vmap(lambda k, xb, x0, e: propose(k, xb, x0, e, sh, sw, canvas, canvas_t))(
        step_keys, x_best, xi, eps_b)
    m = _margin(fn, x_new, y)
    # AutoAttack's rule with the margin loss: keep a proposal that lowers the loss; a
    # misclassified proposal is kept too.
    better = todo & (m < loss_min)
    accept = todo & (better | (m <= 0))
    loss_min = jnp.where(better, m, loss_min)
    margin_min = jnp.where(accept, m, margin_min)
    x_best = jnp.where(accept[:, None, None, None], x_new, x_best)
    return i + 1, (x_best, margin_min, loss_min, n_q + todo.astype(jnp.int32))

  _, state = jax.lax.while_loop(cond, body, (jnp.int32(0), state))
  x_best, margin_min, _, n_q = state
  return SquareResult(x_best.reshape(shape), margin_min > 0, n_q)


def square(logits_fn, x, y, *, key, eps, norm: str = "linf", n_queries: int = 5000,
           p_init: float = 0.8, rescale_schedule: bool = False) -> jax.Array:
  """Square Attack (untargeted, margin loss); returns x_adv in the eps-ball and [0, 1].

  Args:
    logits_fn: batch [B, ...] -> logits [B, C], C >= 2 (the margin needs a class besides y);
      only queried, never differentiated. An NNX module runs as an eval-mode copy and is never
      changed (docs/design.md, Contracts).
    x: [B, H, W, C] images or [B, D] vectors, values in [0, 1].
    y: [B] int32 labels (or the clean prediction).
    key: a key or [B] per-example keys.
    eps: radius (float or [B]).
    norm: ``"linf"`` or ``"l2"``.
    n_queries: query budget per sample (5000 in AutoAttack); the search stops per sample at
      the first misclassified point and for the batch once all samples are broken.
    p_init: initial fraction of pixels in the window (0.8 in AutoAttack).
    rescale_schedule: False (default, AutoAttack's standard version): the window shrinks after
      query 10, 50, 200, ... 8000 whatever ``n_queries``; True: that schedule is stretched
      over ``n_queries`` as if it were 10,000 (``resc_schedule=True`` in AutoAttack's Square).

  Returns:
    x_adv [B, ...] with ``||x_adv - x|| <= eps`` (up to float rounding) and values in [0, 1].

  Raises:
    UserError: bad inputs, labels outside 0..C-1, a model output that is not finite [B, C]
      logits with C >= 2, or a forward pass that changes state.
  """
  if compiled.is_eager(x, y, key, eps):   # compiled once per batch-size bucket
    return compiled.call(square, logits_fn, x, y, key=key, eps=eps, name="square", norm=norm,
                         n_queries=n_queries, p_init=p_init, rescale_schedule=rescale_schedule)
  return square_run(logits_fn, x, y, key=key, eps=eps, norm=norm, n_queries=n_queries,
                    p_init=p_init, rescale_schedule=rescale_schedule).x_adv
