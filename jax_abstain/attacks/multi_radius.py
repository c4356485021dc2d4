"""Robustness at several radii in one call, re-using work across radii.

    robust = robust_at_radii(logits_fn, x, y, key=key, radii=[1/255, 2/255, 4/255],
                             attack="autoattack")          # {radius: [B] bool}

The eps-balls are nested, so a sample broken at a smaller radius is non-robust at every larger
one and is not attacked again: radii run in increasing order, each only on the survivors of the
previous one (``active``). Radius r uses keys ``fold_in(example_key, crc32(repr(r)))``, so a
sample's result depends neither on its batch nor on which other radii were requested.
`jax_abstain.evaluate` calls it with a precompiled ``attack_fn`` (the model's weights as jit
arguments); survivors are then padded to the full batch so every radius re-uses one
compilation. Every returned point is checked to lie in its eps-ball and in [0, 1], and
robustness is re-read from the model at that point, never taken on the attack's word.
"""
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from jax_abstain import soundness, validation
from jax_abstain.attacks import common
from jax_abstain.attacks.apgd import apgd_run
from jax_abstain.attacks.autoattack import autoattack_run
from jax_abstain.errors import UserError


def radius_keys(keys: jax.Array, radius: float) -> jax.Array:
  """[B] keys for one radius, independent of the other radii requested."""
  tag = zlib.crc32(repr(float(radius)).encode()) & 0x7FFFFFFF
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, tag)


def pad_rows(a, size):
  """Pads the leading axis to `size` by repeating the first row (results for pads are dropped)."""
  return a if len(a) == size else np.concatenate([a, np.repeat(a[:1], size - len(a), 0)])


def robust_at_radii(logits_fn, x, y, *, key, radii, norm: str = "linf",
                    attack: str = "apgd", attack_fn=None, **attack_kwargs) -> dict:
  """Per-sample robustness at each radius.

  Args:
    logits_fn: batch [B, ...] -> logits [B, C], C >= 2; an NNX module runs as an eval-mode
      copy and is never changed (docs/design.md, Contracts).
    x: [B, ...] inputs in [0, 1]; y: [B] int labels (or clean predictions).
    key: a key or [B] per-example keys.
    radii: positive radii, any order.
    norm: ``"linf"`` or ``"l2"`` (``"l1"`` for apgd).
    attack: ``"apgd"`` (`apgd_run`, e.g. ``loss="ce"``) or ``"autoattack"`` (`autoattack_run`).
    attack_fn: instead of `attack`, a compiled ``(x [B,...], y [B], keys [B], eps [B]) -> x_adv``;
      its inputs are padded to the full batch B so that it compiles once.
    **attack_kwargs: passed to the attack (not with `attack_fn`).

  Returns:
    {radius: [B] bool numpy array}, robust iff the attack found no adversarial point. Samples
    misclassified at x are non-robust at every radius.

  Raises:
    UserError: bad inputs, labels outside 0..C-1, a model output that is not finite [B, C]
      logits with C >= 2, or a forward pass that changes state. A radius that covers the whole
      input box warns.
  """
  validation.check_choice(attack, "robust_at_radii: attack", ("apgd", "autoattack"))
  radii = sorted(validation.check_radii(radii, "robust_at_radii: radii"))
  norm = common.check_norm(norm, common.APGD_NORMS if attack == "apgd" else common.NORMS)
  common.validate_inputs(x, y, radii[0], "robust_at_radii")
  for i, r in enumerate(radii):
    validation.check_radius_in_box(r, norm, int(np.prod(np.shape(x)[1:])),
                                   f"robust_at_radii: radii[{i}]")
  batch = x.shape[0]
  if attack_fn is not None and attack_kwargs:
    raise UserError("robust_at_radii: attack_kwargs go into attack_fn, not next to it")
  keys = common.example_keys(key, batch)
  x_np, y_np = np.asarray(x), np.asarray(y)
  logits_fn, clean, _ = common.take_model(logits_fn, x, y, name="robust_at_radii")
  still = np.asarray(jnp.argmax(clean, -1)) == y_np
  out = {}
  for r in radii:
    todo = np.flatnonzero(still)
    robust = np.zeros(batch, bool)
    if todo.size:
      r_keys = radius_keys(keys, r)
      if attack_fn is not None:
        rows = pad_rows(todo, batch)
        x_adv = np.asarray(attack_fn(jnp.asarray(x_np[rows]), jnp.asarray(y_np[rows]), r_keys[rows],
                                     jnp.full((batch,), r, jnp.float32)))[:todo.size]
        claimed_np = None
      else:
        kw = dict(key=r_keys[todo], eps=r, norm=norm, **attack_kwargs)
        run = apgd_run if attack == "apgd" else autoattack_run
        result = run(logits_fn, jnp.asarray(x_np[todo]), jnp.asarray(y_np[todo]), **kw)
        x_adv = np.asarray(result.x_adv)
        # APGDconf returns its highest-loss point, not necessarily one that flips: no claim.
        claimed_np = None if attack_kwargs.get("loss") == "conf" else np.asarray(result.robust)
      # Soundness guard: every point inside its eps-ball and [0, 1], and robustness re-read
      # from the model at that point rather than taken on the attack's word (a "broken"
      # sample whose prediction does not change stays robust). Padded so that a jitted
      # logits_fn keeps seeing one shape.
      n_todo = todo.size
      shaped = pad_rows(x_adv, batch) if attack_fn is not None else x_adv
      ref = pad_rows(x_np[todo], batch) if attack_fn is not None else x_np[todo]
      labels = pad_rows(y_np[todo], batch) if attack_fn is not None else y_np[todo]
      claimed = None if claimed_np is None else pad_rows(claimed_np, len(shaped))
      robust[todo] = soundness.check_attack_result(
          logits_fn, ref, shaped, labels, eps=r, norm=norm, claimed_robust=claimed,
          name=f"{attack} at radius {r:g}")[:n_todo]
    out[r] = robust
    still &= robust
  return out
