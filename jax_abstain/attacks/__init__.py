"""Adversarial attacks as pure, jittable functions.

    from jax_abstain import attacks
    x_adv = attacks.apgd(logits_fn, x, y, key=jax.random.key(0), eps=8/255)   # APGD-CE
    robust = attacks.is_robust(logits_fn, x_adv, y)                            # [B] bool
    x_adv = attacks.autoattack(logits_fn, x, y, key=key, eps=8/255)            # AA standard
    x_adv = attacks.fab(logits_fn, x, y, key=key, eps=0.5, norm="l2")          # FAB-T
    x_adv = attacks.square(logits_fn, x, y, key=key, eps=8/255)                # Square, 5000 q.

Contract (docs/design.md, "Contracts"): ``attack(logits_fn, x, y, *, key, eps, norm="linf",
...) -> x_adv`` with x_adv in the eps-ball around x and in [0, 1]; a sample is robust iff
``argmax logits_fn(x_adv) == y``. Once per call every attack takes the model in
(`common.take_model`): an NNX module, in whatever mode, runs as an eval-mode copy and is never
changed; the output must be finite logits [B, C] with C >= 2 (DLR 3, targeted DLR 4) and y in
0..C-1; a radius that covers the whole input box warns. To run an attack on an NNX model under one `jax.jit` with the
weights as arguments (not baked-in constants), use `jit_attack`.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jax_abstain import validation
from jax_abstain.attacks import common
from jax_abstain.attacks.apgd import ApgdResult, apgd, apgd_run, checkpoint_schedule
from jax_abstain.attacks.autoattack import AutoAttackResult, autoattack, autoattack_run
from jax_abstain.attacks.common import per_example_randomized
from jax_abstain.attacks.fab import FabResult, fab, fab_run
from jax_abstain.attacks.multi_radius import robust_at_radii
from jax_abstain.attacks.pgd import pgd
from jax_abstain.attacks.square import SquareResult, square, square_run

ATTACKS = {"pgd": pgd, "apgd": apgd, "fab": fab, "square": square, "autoattack": autoattack}


def is_robust(logits_fn, x_adv: jax.Array, y: jax.Array) -> jax.Array:
  """[B] bool: the prediction at x_adv equals y (an NNX module: its eval-mode copy's).

  Raises:
    UserError: labels outside 0..C-1 or a model output that is not [B, C] logits, C >= 2.
  """
  fn, logits, _ = common.take_model(logits_fn, x_adv, y, name="is_robust")
  return jnp.argmax(fn(x_adv) if logits is None else logits, axis=-1) == y


def jit_attack(model: nnx.Module, attack, **attack_kwargs):
  """Returns ``run(x, y, key) -> x_adv``, jitted with the model's state as an argument.

  The model crosses into jit as ``(graphdef, state)`` of its eval-mode copy
  (`validation.eval_copy`: the caller's module is never changed, whatever its mode); re-using
  the returned function for every batch compiles once per input shape.
  """
  graphdef, state = nnx.split(validation.eval_copy(model))

  @jax.jit
  def run(state, x, y, key):
    net = nnx.merge(graphdef, state)
    return attack(net, x, y, key=key, **attack_kwargs)

  return functools.partial(run, state)


__all__ = ["ATTACKS", "ApgdResult", "AutoAttackResult", "FabResult", "SquareResult", "apgd",
           "apgd_run", "autoattack", "autoattack_run", "checkpoint_schedule", "fab", "fab_run",
           "is_robust", "jit_attack", "per_example_randomized", "pgd", "robust_at_radii", "square",
           "square_run"]
