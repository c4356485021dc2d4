"""Property tests (hypothesis) for the guarantees the library states.

* Attacks: for random inputs, radii, norms and linear models, every returned point lies in its
  eps-ball and in [0, 1] (`soundness.check_attack_result` accepts it), and a point an attack
  calls non-robust really changes the prediction.
* Composition (eq. 12): per sample, nat = S b_acc + (1 - S) c_acc and rob = S b_acc b_rob +
  (1 - S) c_acc c_rob; the default selector reads robustness at 2 eps; with reports that are
  monotone in the radius every selected sample is robust in the composition; robust accuracy
  lies between the committed accuracy and the natural accuracy; a cascade with one branch is
  the 2-composition, and a branch that never commits changes nothing.
* Certification never reports a radius for an abstention.
* Evaluation reports do not depend on the batch size.

Shapes are fixed (B = 4 inputs of dimension 6, 3 classes) and the attacks jitted with the model
as an argument, so each (attack, norm) compiles once; example counts stay small (``ci``
profile in conftest.py, fewer where a call costs more).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from jax_abstain import attacks, compose, models, smoothing, soundness
from jax_abstain.evaluation import empirical as evaluate

B, D, C = 4, 6, 3
unit = st.floats(0.0, 1.0, width=32)
inputs = hnp.arrays(np.float32, (B, D), elements=unit)
weights = hnp.arrays(np.float32, (D, C), elements=st.floats(-3.0, 3.0, width=32))
radii_st = hnp.arrays(np.float32, (B,), elements=st.floats(2.0 ** -10, 1.0, width=32))


def _linear(w):
  return lambda z: z.reshape(z.shape[0], -1) @ w


ATTACKS = {
    "pgd": lambda f, x, y, k, e, norm: (attacks.pgd(f, x, y, key=k, eps=e, norm=norm, n_iter=5), None),
    "apgd": lambda f, x, y, k, e, norm: tuple(attacks.apgd_run(f, x, y, key=k, eps=e, norm=norm,
                                                               n_iter=5)[:2]),
    "apgd-dlr": lambda f, x, y, k, e, norm: tuple(attacks.apgd_run(f, x, y, key=k, eps=e, norm=norm,
                                                                   n_iter=5, loss="dlr")[:2]),
    "fab": lambda f, x, y, k, e, norm: (attacks.fab(f, x, y, key=k, eps=e, norm=norm, n_iter=5), None),
    "square": lambda f, x, y, k, e, norm: tuple(attacks.square_run(f, x, y, key=k, eps=e, norm=norm,
                                                                   n_queries=20)[:2]),
}
CASES = [("pgd", "linf"), ("pgd", "l2"), ("apgd", "linf"), ("apgd", "l2"), ("apgd", "l1"),
         ("apgd-dlr", "linf"), ("fab", "linf"), ("fab", "l2"), ("square", "linf"), ("square", "l2")]


@functools.lru_cache(maxsize=None)
def _jitted(name, norm):
  @jax.jit
  def run(w, x, y, key, eps):
    return ATTACKS[name](_linear(w), x, y, key, eps, norm)
  return run


@pytest.mark.parametrize("name,norm", CASES, ids=[f"{a}-{n}" for a, n in CASES])
@settings(max_examples=6)
@given(x=inputs, w=weights, eps=radii_st, seed=st.integers(0, 2**16))
def test_attack_points_stay_in_the_ball_and_box(name, norm, x, w, eps, seed):
  f = _linear(jnp.asarray(w))
  y = np.asarray(jnp.argmax(f(jnp.asarray(x)), -1)).astype(np.int32)   # label-free: F(x)
  x_adv, claimed = _jitted(name, norm)(jnp.asarray(w), jnp.asarray(x), jnp.asarray(y),
                                      jax.random.key(seed), jnp.asarray(eps))
  x_adv = np.asarray(x_adv)
  # The soundness guard accepts the points (raises SoundnessError otherwise) ...
  robust = soundness.check_attack_result(f, x, x_adv, y, eps=eps, norm=norm)
  # ... and, checked here independently: the ball (float32 slack) and the box.
  delta = (x_adv.astype(np.float64) - x).reshape(B, -1)
  dist = {"linf": np.abs(delta).max(-1), "l2": np.sqrt((delta ** 2).sum(-1)),
          "l1": np.abs(delta).sum(-1)}[norm]
  assert np.all(dist <= eps * (1 + 1e-4) + 1e-6), (dist, eps)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  if claimed is not None:
    # A point the attack calls non-robust really changes the prediction (up to float32 noise
    # on the margin: the re-read of `check_attack_result` decides exactly at a tie).
    logits = np.asarray(f(jnp.asarray(x_adv)), np.float64)
    top_other = np.max(np.where(np.eye(C)[y] > 0, -np.inf, logits), -1)
    margin = logits[np.arange(B), y] - top_other
    broken = ~np.asarray(claimed, bool)
    assert np.all(margin[broken] <= 1e-5), margin[broken]
    # Where the flip is clear the guard agrees; at an exact tie (e.g. an all-zero model, which
    # Square counts as broken) argmax still returns y, and the guard counts the sample robust.
    assert not robust[broken & (margin < -1e-5)].any()
    np.testing.assert_array_equal(robust, np.argmax(logits, -1) == y)


bits = st.lists(st.tuples(*[st.booleans()] * 7), min_size=1, max_size=30)


def _report(acc, rob1, rob2, label):
  n = len(acc)
  return {"sample_idx": np.arange(n), "label": label, "pred": np.where(acc, label, 1 - label),
          "is_acc": acc.astype(int), "conf": np.full(n, 0.9), "is_rob@0.1": rob1.astype(int),
          "is_rob@0.2": rob2.astype(int)}


@given(rows=bits)
def test_composition_per_sample_formula_and_bounds(rows):
  b_acc, b_rob1, b_rob2, c_acc, c_rob1, c_rob2, lab = (np.array(c) for c in zip(*rows))
  b_rob2 = b_rob2 & b_rob1                # reports are monotone: robust at 2 eps => at eps
  c_rob2 = c_rob2 & c_rob1
  label = lab.astype(int)
  branch, core = _report(b_acc, b_rob1, b_rob2, label), _report(c_acc, c_rob1, c_rob2, label)
  comp, sel, _, shown = compose.compose_reports_per_sample([branch, core], "0.1")
  assert shown == ["0.2"]                                  # the 2 eps check by default
  np.testing.assert_array_equal(sel, b_rob2)
  s = sel.astype(int)
  np.testing.assert_array_equal(comp.is_acc, (s * b_acc + (1 - s) * c_acc).astype(bool))
  np.testing.assert_array_equal(comp.is_rob_acc,
                                (s * b_acc * b_rob1 + (1 - s) * c_acc * c_rob1).astype(bool))
  # Soundness of the 2 eps selection: where the branch commits it is robust at eps.
  assert np.all(comp.is_rob[sel])
  summary = compose.compose_reports([branch, core], "0.1")
  assert summary == compose.compose_reports([branch, core], "0.1", select_at=["0.2"])
  committed_acc = 100.0 * np.mean(sel & b_acc)
  # (0.01: the summary rounds to 2 decimals.)
  assert committed_acc - 0.01 <= summary["rob_acc"] <= summary["nat_acc"]
  assert summary["rob_acc"] <= committed_acc + 100.0 * np.mean(~sel & c_acc & c_rob1) + 0.01
  assert summary["rob_sel"] == round(100.0 * np.mean(sel), 2)
  # The same from plain indicator arrays (eq. 12 on its own).
  direct = compose.compose_indicators([sel], [b_acc, c_acc], [b_rob1, c_rob1])
  np.testing.assert_array_equal(direct.is_acc, comp.is_acc)
  np.testing.assert_array_equal(direct.is_rob_acc, comp.is_rob_acc)


@given(rows=bits)
def test_cascade_with_a_silent_branch_equals_the_two_composition(rows):
  b_acc, b_rob1, b_rob2, c_acc, c_rob1, c_rob2, lab = (np.array(c) for c in zip(*rows))
  label = lab.astype(int)
  branch = _report(b_acc, b_rob1, b_rob2 & b_rob1, label)
  core = _report(c_acc, c_rob1, c_rob2 & c_rob1, label)
  silent = _report(c_acc, c_rob1 & False, c_rob2 & False, label)   # never robust: never commits
  two, *_ = compose.compose_reports_per_sample([branch, core], "0.1")
  for order in ([branch, silent, core], [silent, branch, core]):
    three, *_ = compose.compose_reports_per_sample(order, "0.1")
    np.testing.assert_array_equal(three.is_acc, two.is_acc)
    np.testing.assert_array_equal(three.is_rob_acc, two.is_rob_acc)


LINEAR_W = jnp.asarray(np.random.default_rng(0).normal(size=(D, C)).astype(np.float32))
LINEAR_F = _linear(LINEAR_W)


@settings(max_examples=8)
@given(x=hnp.arrays(np.float32, (2, D), elements=unit), sigma=st.floats(0.05, 2.0))
def test_certification_never_reports_a_radius_for_an_abstention(x, sigma):
  pred, radius = smoothing.certify(LINEAR_F, x, key=jax.random.key(1), sigma=sigma, n0=10, n=60,
                                   alpha=0.01, batch_size=64)
  soundness.check_certificates(pred, radius)      # raises SoundnessError otherwise
  assert np.all(radius[pred == -1] == 0) and np.all(radius[pred >= 0] >= 0)
  result = smoothing.certify_at_radius(LINEAR_F, x, 0.1, key=jax.random.key(1), sigma=sigma,
                                       n0=10, n=60, alpha=0.01, batch_size=64, first_look=20)
  assert np.all(result.pred[~result.certified] == -1)


def test_evaluation_report_does_not_depend_on_the_batch_size():
  net = models.create("mlp", num_classes=3, in_features=D, hidden=(8,), seed=3)
  net.eval()
  x = np.random.default_rng(1).uniform(0, 1, (10, D)).astype(np.float32)
  y = np.random.default_rng(2).integers(0, 3, 10).astype(np.int32)
  kw = dict(radii=["0.05", "0.1"], key=jax.random.key(0), n_iter=5, progress=False)
  small = evaluate.evaluate_model(net, x, y, batch_size=3, **kw)
  large = evaluate.evaluate_model(net, x, y, batch_size=10, **kw)
  assert list(small) == list(large)
  for name in small:
    np.testing.assert_array_equal(small[name], large[name], err_msg=name)
