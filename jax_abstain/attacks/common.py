"""Pieces shared by the attacks: norms, projections, random starts, per-example keys, losses.

    keys = example_keys(key, batch_size)                 # [B] typed keys
    x_adv = project(x_adv, x, eps, "linf")               # into the eps-ball and [0, 1]
    loss = attack_loss("ce")(logits, y)                  # [B], to be maximised

Shapes: ``x`` is ``[B, ...]`` (NHWC images or feature vectors) with values in [0, 1]; norms
and projections act on all non-batch axes of one example.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from jax_abstain import losses, validation
from jax_abstain.models import fast_conv
from jax_abstain.errors import UserError

NORMS = ("linf", "l2")
APGD_NORMS = ("linf", "l2", "l1")  # l1 only for APGD (l1-APGD); FAB and Square are Linf/L2
LogitsFn = Callable[[jax.Array], jax.Array]


def check_norm(norm: str, allowed=NORMS) -> str:
  return validation.check_norm(norm, "norm", allowed)


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshapes a per-example [B] array to broadcast against x [B, ...]."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def l2_norm(v: jax.Array) -> jax.Array:
  """Per-example L2 norm over all non-batch axes: [B, ...] -> [B]."""
  return jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=-1))


def linf_norm(v: jax.Array) -> jax.Array:
  return jnp.max(jnp.abs(v.reshape(v.shape[0], -1)), axis=-1)


def l1_norm(v: jax.Array) -> jax.Array:
  return jnp.sum(jnp.abs(v.reshape(v.shape[0], -1)), axis=-1)


def norm_of(v: jax.Array, norm: str) -> jax.Array:
  return {"linf": linf_norm, "l2": l2_norm, "l1": l1_norm}[norm](v)


def project(x_adv: jax.Array, x: jax.Array, eps, norm: str) -> jax.Array:
  """Projects onto {x' : ||x' - x||_p <= eps} and then clips to [0, 1].

  For Linf both sets are boxes, so clip-then-clip is the exact projection onto their
  intersection. For L2 this is APGD's order (ball, then box); the result is in [0,1] and,
  because clipping toward x (which is itself in [0,1]) only shrinks |delta|, stays in the ball.
  eps may be a scalar or a per-example [B] array. For L1 the exact Euclidean projection onto
  the intersection of ball and box (`l1.project_l1_box`).
  """
  if norm == "l1":
    from jax_abstain.attacks import l1  # local: l1 is a leaf module, avoids an import cycle
    return jnp.clip(x + l1.project_l1_box(x, x_adv - x, jnp.reshape(eps, (-1,))), 0.0, 1.0)
  eps = _bcast(jnp.asarray(eps, x.dtype), x) if jnp.ndim(eps) else eps
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -eps, eps)
  else:
    n = _bcast(l2_norm(delta), x)
    delta = delta * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12))
  return jnp.clip(x + delta, 0.0, 1.0)


def example_keys(key: jax.Array, batch_size: int) -> jax.Array:
  """Per-example keys: `key` as given if it is already a [B] batch, else fold_in(key, i).

  Evaluation passes ``fold_in(run_key, sample_idx)`` per sample so that an example's attack
  does not depend on the batch it lands in; for a single key, examples are numbered 0..B-1.
  """
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  if key.ndim == 1:
    if key.shape[0] != batch_size:
      raise UserError(f"key: got {key.shape[0]} per-example keys for a batch of {batch_size}")
    return key
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch_size))


def random_start(keys: jax.Array, x: jax.Array, eps, norm: str) -> jax.Array:
  """APGD's random start: ``x + eps * t / ||t||`` (t uniform in [-1,1] for Linf, normal for L2),
  clipped to [0, 1]. keys: [B]."""
  shape = x.shape[1:]
  if norm == "linf":
    t = jax.vmap(lambda k: jax.random.uniform(k, shape, x.dtype, -1.0, 1.0))(keys)
    t = t / _bcast(jnp.maximum(linf_norm(t), 1e-12), x)
  else:
    t = jax.vmap(lambda k: jax.random.normal(k, shape, x.dtype))(keys)
    t = t / _bcast(jnp.maximum(l2_norm(t), 1e-12), x)
  eps = _bcast(jnp.asarray(eps, x.dtype), x) if jnp.ndim(eps) else eps
  return jnp.clip(x + eps * t, 0.0, 1.0)


def uniform_start(keys: jax.Array, x: jax.Array, eps, norm: str) -> jax.Array:
  """Foolbox/Madry PGD start: uniform in the Linf box (or L2 ball), clipped to [0, 1]."""
  shape = x.shape[1:]
  eps_b = _bcast(jnp.asarray(eps, x.dtype), x) if jnp.ndim(eps) else eps
  if norm == "linf":
    t = jax.vmap(lambda k: jax.random.uniform(k, shape, x.dtype, -1.0, 1.0))(keys)
    return jnp.clip(x + eps_b * t, 0.0, 1.0)
  # Uniform in the L2 ball: direction uniform on the sphere, radius ~ U^(1/d).
  d = x[0].size
  def one(k):
    k1, k2 = jax.random.split(k)
    v = jax.random.normal(k1, shape, x.dtype)
    return v / jnp.maximum(jnp.linalg.norm(v), 1e-12) * jax.random.uniform(k2, (), x.dtype) ** (1.0 / d)
  return jnp.clip(x + eps_b * jax.vmap(one)(keys), 0.0, 1.0)


# Classes each attack loss reads: DLR divides by the gap to the 3rd largest logit, targeted
# DLR by the gap to the mean of the 3rd and 4th (AutoAttack's rule, in its checks.py);
# CE and conf need one class besides y.
MIN_CLASSES = {"ce": 2, "conf": 2, "dlr": 3, "dlr-targeted": 4}


def _need_classes(logits: jax.Array, n: int, loss: str):
  """Raises at trace time (the class count is static) when `loss` cannot be defined: without
  it ``jnp.sort(z)[:, 2]`` on 2 classes is clamped to column 1, a constant loss with a zero
  gradient, and the attack silently reports every sample robust."""
  if logits.shape[-1] < n:
    raise UserError(f"attack loss {loss}: needs >= {n} classes (AutoAttack's rule), the model "
                    f"has {logits.shape[-1]}; use loss='ce'")


def dlr(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Difference-of-logits-ratio loss (Croce & Hein 2020), to be maximised; needs >= 3 classes.

  ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with z sorted descending.
  """
  _need_classes(logits, 3, "dlr")
  z_sorted = jnp.sort(logits, axis=-1)[:, ::-1]
  z_y = jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
  z_other = jnp.take_along_axis(logits, losses.top_other_class(logits, y)[:, None], -1)[:, 0]
  return -(z_y - z_other) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def conf(logits: jax.Array, y: jax.Array) -> jax.Array:
  """APGDconf loss (paper eq. 17): ``-CE(f(x'), c*)``, c* = most likely class != y at x'.

  Maximising it maximises the confidence of the strongest other class; with y = F(x) this is
  the high-confidence adversarial example that defeats a softmax-response selector.
  """
  return -losses.cross_entropy(logits, losses.top_other_class(logits, y))


def ce(logits: jax.Array, y: jax.Array) -> jax.Array:
  return losses.cross_entropy(logits, y)


def dlr_targeted(logits: jax.Array, y: jax.Array, y_target: jax.Array) -> jax.Array:
  """Targeted DLR loss (APGD-T), to be maximised; needs >= 4 classes.

  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` with z sorted descending and t the
  target class, as in AutoAttack's ``dlr_loss_targeted``.
  """
  _need_classes(logits, 4, "dlr-targeted")
  z_sorted = jnp.sort(logits, axis=-1)[:, ::-1]
  z_y = jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
  z_t = jnp.take_along_axis(logits, y_target[:, None], -1)[:, 0]
  return -(z_y - z_t) / (z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12)


_LOSSES = {"ce": ce, "dlr": dlr, "dlr-targeted": dlr_targeted, "conf": conf}
LOSS_NAMES = tuple(_LOSSES)


def check_loss(name: str) -> str:
  if name not in _LOSSES:
    raise UserError(f"attack loss: expected one of {', '.join(_LOSSES)}, got {name!r}")
  return name


def attack_loss(name: str, y_target: jax.Array | None = None):
  """Returns a per-example loss ``(logits [B,C], y [B]) -> [B]`` that the attack maximises.

  ``"dlr-targeted"`` needs ``y_target`` [B], the class each example is pushed towards.
  """
  fn = _LOSSES[check_loss(name)]
  if name == "dlr-targeted":
    if y_target is None:
      raise ValueError("attack loss dlr-targeted needs y_target")
    return lambda logits, y: fn(logits, y, y_target)
  return fn


def per_example_randomized(rand_fn) -> LogitsFn:
  """Turns a randomized model ``rand_fn(x [n, ...], key) -> logits [n, C]`` into
  ``f(x [B, ...], keys [B]) -> [B, C]`` that draws each example's randomness from its own key.

  Evaluating example by example (under `vmap`) is what makes the randomness, and hence the
  attack, independent of the batch an example lands in.
  """
  def f(x, keys):
    return jax.vmap(lambda xi, ki: rand_fn(xi[None], ki)[0])(x, keys)
  return f


def make_grad_fn(logits_fn, loss_fn, y: jax.Array, keys: jax.Array | None, eot_iter: int):
  """Returns ``g(x_adv, step) -> (loss [B], logits [B, C], grad [B, ...])``.

  With ``keys is None`` logits_fn is deterministic, ``logits_fn(x)``. Otherwise logits_fn is
  randomized, ``logits_fn(x, keys [B])``, and the gradient is the average over ``eot_iter``
  draws (expectation over transformation); loss and logits come from the last draw, as in
  AutoAttack's EOT loop. Draw j at step i uses ``fold_in(fold_in(key, i + 1), j)``.
  """
  if keys is None:
    return lambda x_adv, step: loss_and_grad(logits_fn, loss_fn, x_adv, y)

  def g(x_adv, step):
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step + 1)

    def draw(j, carry):
      _, _, grad_sum = carry
      draw_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(step_keys, j)
      loss, logits, grad = loss_and_grad(lambda xa: logits_fn(xa, draw_keys), loss_fn, x_adv, y)
      return loss, logits, grad_sum + grad

    loss0, logits0, grad0 = loss_and_grad(
        lambda xa: logits_fn(xa, jax.vmap(jax.random.fold_in, in_axes=(0, None))(step_keys, 0)),
        loss_fn, x_adv, y)
    loss, logits, grad = jax.lax.fori_loop(1, eot_iter, draw, (loss0, logits0, grad0))
    return loss, logits, grad / eot_iter
  return g


def loss_and_grad(logits_fn: LogitsFn, loss_fn, x_adv: jax.Array, y: jax.Array):
  """Per-example losses [B], logits [B, C] and input gradients [B, ...] in one backward pass.

  The batch loss is the *sum* of per-example losses, so each example's gradient is its own.
  """
  def total(xa):
    logits = logits_fn(xa)
    per_example = loss_fn(logits, y)
    return per_example.sum(), (per_example, logits)
  (_, (per_example, logits)), grad = jax.value_and_grad(total, has_aux=True)(x_adv)
  return per_example, logits, grad


def validate_inputs(x, y, eps, name: str = "attack", norm: str | None = None):
  """Host-side checks of shapes, dtypes, ranges and the radius (`validation.check_attack_inputs`);
  raises one-line UserErrors, warns about a radius covering the input box. Tracers (inside
  jit) pass unchecked."""
  validation.check_attack_inputs(x, y, eps, name, norm)


def take_model(logits_fn, x, y, *, name: str, keys=None, randomized: bool = False,
               min_classes: int = 2, why: str = "", fast: bool = True):
  """The model intake of an attack, once per call: (fn, clean logits or None, class count C).

  An NNX module runs as an eval-mode copy and a forward pass that changes state is refused
  (`validation.inference_model`); the output must be logits [B, C] with C >= `min_classes`
  (`why` says which loss needs them), y must lie in 0..C-1. On concrete inputs the clean logits
  are computed once (with ``keys`` [B] for a randomized ``(x, keys) -> logits`` model) and
  must be finite; under jit only the shapes are checked and the logits are None. On CPU the
  returned function computes convolution and max-pooling input gradients in loop-friendly
  forms (`fast_conv.fast_input_grads`: the same function, several times faster in the attack
  loops; ``JAX_ABSTAIN_PLAIN_GRADIENTS=1`` turns it off). ``fast=False`` returns the eval-mode
  model itself (an NNX module stays a module, so a caller can cache compiled code by its graph;
  the attacks it calls rewrite the gradients themselves).

  Raises:
    UserError: one line naming the problem.
  """
  args = (x, keys) if randomized else (x,)
  fn, out = validation.inference_model(logits_fn, *args, name=f"{name}: model")
  n_classes = validation.check_logits(out, n=x.shape[0], name=f"{name}: model")
  if n_classes < min_classes:
    raise UserError(f"{name}: {why} needs >= {min_classes} classes (AutoAttack's rule), the "
                    f"model has {n_classes}")
  validation.check_labels(y, n=x.shape[0], num_classes=n_classes, name=f"{name}: y")
  if fast and fast_conv.applies():
    fn = fast_conv.fast_input_grads(fn)
  logits = None
  if not any(isinstance(a, jax.core.Tracer) for a in (*args, y)):
    logits = fn(*args)
    validation.check_logits(logits, n=x.shape[0], name=f"{name}: model")
  return fn, logits, n_classes
