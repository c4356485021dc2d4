"""Robustness at several radii in one call, re-using work across radii.

    robust = robust_at_radii(logits_fn, x, y, key=key, radii=[1/255, 2/255, 4/255],
                             attack="autoattack")          # {radius: [B] bool}

The eps-balls are nested, so a sample broken at a smaller radius is non-robust at every larger
one and is not attacked again: radii run in increasing order, each only on the survivors of the
previous one (``active``). Radius r uses keys ``fold_in(example_key, crc32(repr(r)))``, so a
sample's result depends neither on its batch nor on which other radii were requested.
(`jax_abstain.evaluate` does the same for its APGD columns; this helper serves the other
attacks and library users.)
"""
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from jax_abstain.attacks import common
from jax_abstain.attacks.apgd import apgd_run
from jax_abstain.attacks.autoattack import autoattack_run
from jax_abstain.errors import UserError


def radius_keys(keys: jax.Array, radius: float) -> jax.Array:
  """[B] keys for one radius, independent of the other radii requested."""
  tag = zlib.crc32(repr(float(radius)).encode()) & 0x7FFFFFFF
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, tag)


def robust_at_radii(logits_fn, x, y, *, key, radii, norm: str = "linf",
                    attack: str = "apgd", **attack_kwargs) -> dict:
  """Per-sample robustness at each radius.

  Args:
    logits_fn: batch [B, ...] -> logits [B, C] (eval mode).
    x: [B, ...] inputs in [0, 1]; y: [B] int labels (or clean predictions).
    key: a key or [B] per-example keys.
    radii: positive radii, any order.
    norm: ``"linf"`` or ``"l2"`` (``"l1"`` for apgd).
    attack: ``"apgd"`` (`apgd_run`, e.g. ``loss="ce"``) or ``"autoattack"`` (`autoattack_run`).
    **attack_kwargs: passed to the attack.

  Returns:
    {radius: [B] bool numpy array}, robust iff the attack found no adversarial point. Samples
    misclassified at x are non-robust at every radius.
  """
  if attack not in ("apgd", "autoattack"):
    raise UserError(f"robust_at_radii: attack must be apgd or autoattack, got {attack!r}")
  radii = sorted(float(r) for r in radii)
  if not radii or radii[0] <= 0:
    raise UserError("robust_at_radii: give at least one positive radius")
  common.validate_inputs(x, y, radii[0], "robust_at_radii")
  batch = x.shape[0]
  keys = common.example_keys(key, batch)
  still = np.array(jnp.argmax(logits_fn(x), -1) == y)
  out = {}
  for r in radii:
    todo = np.flatnonzero(still)
    robust = np.zeros(batch, bool)
    if todo.size:
      kw = dict(key=radius_keys(keys[todo], r), eps=r, norm=norm, **attack_kwargs)
      xs, ys = jnp.asarray(x)[todo], jnp.asarray(y)[todo]
      if attack == "apgd":
        x_adv = apgd_run(logits_fn, xs, ys, **kw).x_adv
      else:
        x_adv = autoattack_run(logits_fn, xs, ys, **kw).x_adv
      # Re-read robustness at the returned point rather than trusting the attack's flag.
      robust[todo] = np.asarray(jnp.argmax(logits_fn(x_adv), -1) == ys)
    out[r] = robust
    still &= robust
  return out
