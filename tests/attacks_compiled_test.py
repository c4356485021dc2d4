"""Eager attack calls compile once per model and power-of-two batch bucket (attacks/compiled.py)
and give the points of the same attack jitted on the unpadded batch; AutoAttack's jitted attacks
are found again on a second call."""
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_abstain import attacks
from jax_abstain.attacks import compiled
from jax_abstain.errors import UserError

# The module (the package exports the function `autoattack` under the same name).
aa_mod = importlib.import_module("jax_abstain.attacks.autoattack")


def _conv_params(seed):
  rng = np.random.default_rng(seed)
  return {"k": jnp.asarray(rng.normal(0, 0.5, (3, 3, 1, 4)), jnp.float32),
          "w": jnp.asarray(rng.normal(0, 0.3, (64, 5)), jnp.float32)}


def conv_fn(p):
  """A user's NHWC function on 8x8x1 inputs: conv 1->4, ReLU, 2x2 max-pool, dense 64->5."""
  def f(x):
    h = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.lax.reduce_window(jax.nn.relu(h), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                              "VALID")
    return h.reshape(h.shape[0], -1) @ p["w"]
  return f


class Net(nnx.Module):
  def __init__(self, seed):
    r = nnx.Rngs(seed)
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=r)
    self.head = nnx.Linear(256, 5, rngs=r)

  def __call__(self, x):
    return self.head(jax.nn.relu(self.conv(x)).reshape(x.shape[0], -1))


def _data(n, seed=0):
  x = np.random.default_rng(seed).uniform(0, 1, (n, 8, 8, 1)).astype(np.float32)
  return jnp.asarray(x)


ATTACKS = {
    "apgd": functools.partial(attacks.apgd, n_iter=6),
    "apgd-t": functools.partial(attacks.apgd, n_iter=4, loss="dlr-targeted", n_target_classes=2),
    "pgd": functools.partial(attacks.pgd, n_iter=3),
    "fab": functools.partial(attacks.fab, n_iter=5),
    "square": functools.partial(attacks.square, n_queries=30),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_eager_call_equals_the_jitted_attack_on_the_unpadded_batch(name):
  fn = conv_fn(_conv_params(0))
  x = _data(5)
  y = jnp.argmax(fn(x), -1)
  attack = ATTACKS[name]
  key = jax.random.key(3)
  eager = attack(fn, x, y, key=key, eps=0.1)                       # bucket 8: padded
  direct = jax.jit(lambda x, y: attack(fn, x, y, key=key, eps=0.1))(x, y)
  assert eager.shape == x.shape
  np.testing.assert_allclose(np.asarray(eager), np.asarray(direct), atol=1e-6)
  assert not np.allclose(np.asarray(eager), np.asarray(x))         # the attack did move points


def _compiled_shapes(attack, model, **options):
  run = compiled._jitted(attack, *model, compiled._items("linf", options))
  return run._cache_size()


def test_one_compilation_per_bucket_for_a_function():
  fn = conv_fn(_conv_params(1))
  for n in (5, 7, 8):                      # one bucket: 8
    x = _data(n, seed=n)
    attacks.apgd(fn, x, jnp.argmax(fn(x), -1), key=jax.random.key(0), eps=0.05, n_iter=3)
  opts = dict(n_iter=3, n_restarts=1, loss="ce", n_target_classes=9)
  assert _compiled_shapes(attacks.apgd, (None, fn), **opts) == 1
  x = _data(9)
  attacks.apgd(fn, x, jnp.argmax(fn(x), -1), key=jax.random.key(0), eps=0.05, n_iter=3)
  assert _compiled_shapes(attacks.apgd, (None, fn), **opts) == 2   # bucket 16


def test_a_module_with_new_weights_reuses_the_compiled_attack():
  x = _data(6)
  outs = []
  for seed in (0, 1):
    net = Net(seed)
    y = jnp.argmax(net(x), -1)
    outs.append(attacks.pgd(net, x, y, key=jax.random.key(0), eps=0.1, n_iter=3))
    ref = jax.jit(lambda x, y, net=net: attacks.pgd(net, x, y, key=jax.random.key(0), eps=0.1,
                                                    n_iter=3))(x, y)
    np.testing.assert_allclose(np.asarray(outs[-1]), np.asarray(ref), atol=1e-6)
  graphdef = nnx.split(Net(0))[0]
  opts = dict(n_iter=3, rel_step=0.25, loss="ce", start="uniform", return_best=False)
  assert _compiled_shapes(attacks.pgd, (graphdef, None), **opts) == 1
  assert not np.allclose(np.asarray(outs[0]), np.asarray(outs[1]))  # the weights were used


def test_bad_inputs_are_refused_on_the_callers_arrays():
  fn = conv_fn(_conv_params(0))
  x = _data(3).at[1, 0, 0, 0].set(1.5)
  with pytest.raises(UserError, match=r"\[0, 1\]|range"):
    attacks.square(fn, x, jnp.zeros(3, jnp.int32), key=jax.random.key(0), eps=0.1)
  with pytest.raises(UserError, match="0..4|label"):
    attacks.apgd(fn, _data(3), jnp.asarray([0, 7, 1]), key=jax.random.key(0), eps=0.1)


def test_bucket_sizes():
  assert [compiled.bucket(n) for n in (1, 2, 3, 5, 8, 9, 1000)] == [1, 2, 4, 8, 8, 16, 1024]


def test_autoattack_finds_its_compiled_attacks_on_a_second_call():
  fn = conv_fn(_conv_params(2))
  x = _data(4)
  y = jnp.argmax(fn(x), -1)
  kw = dict(key=jax.random.key(0), eps=0.05, run_checks=False, n_iter=3, n_queries=10,
            attacks_to_run=("apgd-ce", "square"))
  items = tuple(sorted(dict(norm="linf", n_iter=3, n_queries=10, n_target_classes=9,
                            randomized=False, eot_iter=1).items()))
  first = attacks.autoattack_run(fn, x, y, **kw)
  # Cached under the caller's function (before: a new wrapper each call, so a new jit).
  run = aa_mod._jit_for_fn(fn, items)
  compiled_programs = run._cache_size()
  assert compiled_programs >= 1
  second = attacks.autoattack_run(fn, x, y, **kw)
  assert run._cache_size() == compiled_programs
  np.testing.assert_array_equal(np.asarray(first.robust), np.asarray(second.robust))
