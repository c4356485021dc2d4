"""Attacks, smoothing and evaluation never change the model they are given (issue 16, item 3).

A model in training mode (BatchNorm on batch statistics and updating its running statistics,
dropout drawing from its Rngs) runs as an eval-mode copy: every entry point that takes an NNX
module must return exactly what it returns for the caller's own ``.eval()`` copy, and leave
every Variable of the caller's module bit-identical (parameters, BatchNorm statistics, the
dropout stream's key and count) and its mode unchanged. A model whose forward pass changes
state even in eval mode, and a function that changes a module it closes over, are refused
with one line, again without any change.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_abstain import attacks, evaluation, smoothing, soundness
from jax_abstain.attacks import checks
from jax_abstain.errors import UserError
from jax_abstain.evaluation import certified, empirical, live

KEY = jax.random.key(0)
X = jnp.asarray(np.random.default_rng(0).uniform(0.3, 0.7, size=(6, 8)), jnp.float32)


class Stateful(nnx.Module):
  """8 -> 16 -> BatchNorm -> ReLU -> Dropout -> 3."""

  def __init__(self, rngs):
    self.lin1 = nnx.Linear(8, 16, rngs=rngs)
    self.bn = nnx.BatchNorm(16, rngs=rngs)
    self.drop = nnx.Dropout(0.3, rngs=rngs)
    self.lin2 = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.lin2(self.drop(jax.nn.relu(self.bn(self.lin1(x.reshape(x.shape[0], -1))))))


class Counter(nnx.Variable):
  pass


class CountsCalls(Stateful):
  """Updates a Variable on every call, in any mode."""

  def __init__(self, rngs):
    super().__init__(rngs)
    self.calls = Counter(jnp.zeros((), jnp.int32))

  def __call__(self, x):
    self.calls.value = self.calls.value + 1
    return super().__call__(x)


def training_model(cls=Stateful):
  """A model in training mode whose running statistics have moved off their initial values."""
  m = cls(nnx.Rngs(0, dropout=1))
  m.train()
  for i in range(3):
    m(jax.random.uniform(jax.random.key(10 + i), (16, 8)))
  return m


def snapshot(m):
  """Every Variable's value (keys as raw words) and the mode flags."""
  leaves = []
  for a in jax.tree.leaves(nnx.state(m)):
    a = jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a
    leaves.append(np.array(a))
  return leaves, (m.bn.use_running_average, m.drop.deterministic)


def assert_unchanged(before, m):
  leaves, flags = snapshot(m)
  assert flags == before[1]
  assert len(leaves) == len(before[0])
  for a, b in zip(before[0], leaves):
    np.testing.assert_array_equal(a, b)


def entries(tmp_path):
  """Every entry point that takes an NNX module, as model -> numpy results."""
  y = jnp.zeros(6, jnp.int32)
  small = dict(key=KEY, eps=0.1)
  aa = dict(n_iter=3, n_queries=10, n_target_classes=2)
  smooth = dict(key=KEY, sigma=0.1)
  cfg = {"radii": ("0.1",), "n_iter": 2, "batch_size": 6}
  calls = iter(range(1000))
  path = lambda name: tmp_path / f"{name}-{next(calls)}.csv"
  return {
      "apgd": lambda m: attacks.apgd(m, X, y, n_iter=3, **small),
      "apgd dlr": lambda m: attacks.apgd(m, X, y, n_iter=3, loss="dlr", **small),
      "pgd": lambda m: attacks.pgd(m, X, y, n_iter=3, **small),
      "fab": lambda m: attacks.fab(m, X, y, n_iter=3, n_target_classes=2, **small),
      "square": lambda m: attacks.square(m, X, y, n_queries=10, **small),
      "autoattack": lambda m: attacks.autoattack(m, X, y, **aa, **small),
      "autoattack_run": lambda m: attacks.autoattack_run(m, X, y, **aa, **small).robust,
      "robust_at_radii": lambda m: attacks.robust_at_radii(m, X, y, key=KEY, radii=[0.05, 0.1],
                                                           n_iter=3)[0.1],
      "robust_at_radii aa": lambda m: attacks.robust_at_radii(
          m, X, y, key=KEY, radii=[0.1], attack="autoattack", attacks_to_run=["apgd-ce"],
          n_iter=3)[0.1],
      "is_robust": lambda m: attacks.is_robust(m, X, y),
      "jit_attack": lambda m: attacks.jit_attack(m, attacks.apgd, eps=0.1, n_iter=3)(X, y, KEY),
      "checks.run_all": lambda m: checks.run_all(m, X, y, attacks_to_run=["apgd-ce"]),
      "checks.zero_gradients": lambda m: checks.check_zero_gradients(m, X, y),
      "checks.randomized": lambda m: checks.check_randomized(m, X),
      "soundness": lambda m: soundness.check_attack_result(m, X, X, y, eps=0.1, norm="linf"),
      "smoothing.sample": lambda m: smoothing.sample(m, X[:2], 20, **smooth),
      "smoothing.predict": lambda m: smoothing.predict(m, X[:2], n=20, **smooth),
      "smoothing.certify": lambda m: smoothing.certify(m, X[:2], n0=5, n=20, **smooth),
      "smoothing.certify_at_radius": lambda m: smoothing.certify_at_radius(
          m, X[:2], 0.05, n0=5, n=20, first_look=10, **smooth).certified,
      "evaluate_model": lambda m: empirical.evaluate_model(
          m, np.asarray(X), np.zeros(6, np.int32), radii=["0.1"], key=KEY, n_iter=2,
          batch_size=6, progress=False)["is_rob@0.1"],
      "evaluation.evaluate": lambda m: evaluation.evaluate(
          m, np.asarray(X), np.zeros(6, np.int32), cfg, report_path=path("e"),
          progress=False)["at"]["0.1"]["rob_acc"],
      "certify_report": lambda m: certified.certify_report(
          m, np.asarray(X[:2]), np.zeros(2, np.int32), path("c"), key=KEY, sigma=0.1, n0=5,
          n=20, progress=False)["radius"],
      "live.predict": lambda m: live.predict([m, m], [lambda z: jnp.arange(6) < 3], X)[0],
      "live.robustness_selector": lambda m: live.robustness_selector(m, eps=0.1, key=KEY,
                                                                     n_iter=2)(X),
      "live.evaluate_composition": lambda m: live.evaluate_composition(
          [m, m], np.asarray(X), np.zeros(6, np.int32), eps="0.05", key=KEY, n_iter=2,
          batch_size=6)[1],
  }


ENTRIES = list(entries(None))


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_training_mode_model_runs_in_eval_mode_and_is_never_changed(entry, tmp_path):
  m = training_model()
  by_hand = nnx.clone(m)
  by_hand.eval()                        # what the user would do by hand
  before = snapshot(m)
  run = entries(tmp_path)[entry]
  got = run(m)
  assert_unchanged(before, m)
  want = run(by_hand)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# Entry points that run the model without taking it in (they only use the eval-mode copy
# eagerly, where an update lands on the copy) are left out of the refusal list.
REFUSING = [e for e in ENTRIES if e not in ("checks.randomized", "soundness")]


@pytest.mark.parametrize("entry", REFUSING)
def test_a_model_that_changes_state_even_in_eval_mode_is_refused_unchanged(entry, tmp_path):
  m = training_model(CountsCalls)
  before = snapshot(m)
  with pytest.raises(UserError, match="its forward pass changes its state even in eval mode "
                                      r"\(Cannot mutate Counter"):
    entries(tmp_path)[entry](m)
  assert_unchanged(before, m)


@pytest.mark.parametrize("entry", ["apgd", "autoattack_run", "smoothing.certify", "is_robust"])
def test_a_function_over_a_training_mode_module_is_refused_unchanged(entry, tmp_path):
  m = training_model()
  before = snapshot(m)
  with pytest.raises(UserError, match=r"calling it changes the state of an NNX module .* Call "
                                      r"model.eval\(\) first"):
    entries(tmp_path)[entry](lambda z: m(z))
  assert_unchanged(before, m)
  m.eval()                              # the advice works
  entries(tmp_path)[entry](lambda z: m(z))


def test_issue_example_autoattack_on_a_fresh_wide_resnet():
  """``attacks.autoattack(models.create("wrn-10-1"), x, y, ...)``: a fresh model is in
  training mode; the attack runs it in eval mode (the same points as on its eval copy) and its
  BatchNorm statistics stay at their initial values (mean 0, variance 1)."""
  from jax_abstain import models
  net = models.create("wrn-10-1")
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  y = jnp.zeros(2, jnp.int32)
  before = snapshot_all(net)
  kw = dict(key=KEY, eps=8 / 255, n_iter=2, n_queries=4, n_target_classes=1)
  x_adv = attacks.autoattack(net, x, y, **kw)
  assert_all_unchanged(before, net)
  stats = {path: np.asarray(v.get_value())
           for path, v in nnx.to_flat_state(nnx.state(net, nnx.BatchStat))}
  assert {p[-1] for p in stats} == {"mean", "var"}
  for path, value in stats.items():
    np.testing.assert_array_equal(value, 0.0 if path[-1] == "mean" else 1.0)
  ref = nnx.clone(net)
  ref.eval()
  np.testing.assert_array_equal(x_adv, attacks.autoattack(ref, x, y, **kw))


def snapshot_all(m):
  return [np.array(a) for a in jax.tree.leaves(nnx.state(m, nnx.Not(nnx.RngState)))]


def assert_all_unchanged(before, m):
  for a, b in zip(before, snapshot_all(m)):
    np.testing.assert_array_equal(a, b)
