"""Eager calls of the single attacks, compiled once per model and batch-size bucket.

    x_adv = attacks.apgd(model, x, y, key=key, eps=8/255)   # outside jit: through `call`

Called outside `jax.jit`, an attack's `lax` loops would be traced and compiled on every call,
and again for every new batch size (the last, shorter batch of a dataset, AutoAttack-style
survivor sets). `call` runs the attack instead through a `jax.jit` function cached per
(attack, model graph or function, options), with the batch padded to the next power of two
by repeating its first sample: a loop over batches of any sizes compiles a handful of shapes,
each once. Padding cannot change a real sample's result: every attack here treats samples
independently, and the per-example keys ``fold_in(key, i)`` of `common.example_keys` are
computed before padding (the padded rows repeat sample 0's key, so they even follow sample 0's
trajectory, which keeps batch-level early stops, e.g. Square's, where they were).

The value checks an attack makes on concrete inputs (inputs in [0, 1], radii, labels against
the class count, finite clean logits, a forward pass that changes no state) run here first,
on the caller's unpadded arrays; inside the jitted function only shapes are checked.
An NNX module enters the jit as ``(graphdef, state)`` of its eval-mode copy, so the cache
holds no weights and a module with new weights reuses the compiled attack.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_abstain.attacks import common


def bucket(n: int) -> int:
  """The padded batch size of n samples: the next power of two (n >= 1)."""
  return 1 << max(n - 1, 0).bit_length()


def is_eager(*args) -> bool:
  """True when no argument is a tracer, i.e. the call is not inside a jax transformation."""
  return not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args))


def call(attack, logits_fn, x, y, *, key, eps, name: str, norm: str, min_classes: int = 2,
         why: str = "", **options):
  """``attack(logits_fn, x, y, key=..., eps=..., norm=norm, **options)`` on concrete inputs,
  padded to `bucket` and jitted once per (attack, model, options, bucket).

  Args:
    attack: a public attack (`apgd`, `pgd`, `fab`, `square`); it is called again inside the
      jit, on tracers, where it takes its own traced path.
    logits_fn: an NNX module or a function [B, ...] -> logits [B, C].
    x: [B, ...] inputs in [0, 1]; y: [B] int labels; key: a key or [B] keys; eps: float or [B].
    name, norm, min_classes, why: for the value checks (`common.validate_inputs`,
      `common.take_model`).
    **options: the attack's other keyword arguments (hashable: ints, floats, strings).
  Returns:
    x_adv [B, ...], the attack's result on the unpadded batch.
  Raises:
    UserError: the attack's one-line errors, before anything is compiled.
  """
  common.validate_inputs(x, y, eps, name, norm)
  model, _, _ = common.take_model(logits_fn, x, y, name=name, min_classes=min_classes, why=why,
                                  fast=False)
  x, y = jnp.asarray(x), jnp.asarray(y)
  n = x.shape[0]
  keys = common.example_keys(key, n)
  eps_b = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (n,))
  pad = np.concatenate([np.arange(n), np.zeros(bucket(n) - n, np.int64)])
  if isinstance(model, nnx.Module):
    graphdef, state = nnx.split(model)
    run, args = _jitted(attack, graphdef, None, _items(norm, options)), (state,)
  else:
    run, args = _jitted(attack, None, model, _items(norm, options)), (None,)
  return run(*args, x[pad], y[pad], keys[pad], eps_b[pad])[:n]


def _items(norm, options) -> tuple:
  return tuple(sorted({**options, "norm": norm}.items()))


@functools.lru_cache(maxsize=8)
def _jitted(attack, graphdef, fn, items):
  """The cached jit of `attack` for one model graph (its state an argument) or function."""
  opts = dict(items)

  @jax.jit
  def run(state, x, y, keys, eps):
    model = fn if graphdef is None else nnx.merge(graphdef, state)
    return attack(model, x, y, key=keys, eps=eps, **opts)
  return run
