"""What attacks, smoothing and evaluation accept (issue 16, items 1, 7 and 10), with the right
values of the issue as tests:

1. losses that read a fixed rank of sorted logits refuse too few classes (DLR 3, targeted
   DLR 4: AutoAttack's rule) instead of answering with a constant loss and a zero gradient;
7. labels outside the model's classes and outputs that are no class distribution are refused;
10. a radius that covers the whole input box [0, 1]^d warns.
"""
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_abstain import attacks, losses, smoothing, validation
from jax_abstain.attacks import checks, common
from jax_abstain.errors import UserError
from jax_abstain.evaluation import certified, empirical, live

KEY = jax.random.key(0)


def linear_problem(c=2, n=6, seed=0):
  """f(x) = x @ W with W [8, c] and x in [0.3, 0.7]^8 (the issue's 2-class example for c=2).

  Returns (f, x, y, radius): y = F(x) and, for c = 2, each point's exact Linf distance to the
  decision boundary by hand, |z_1 - z_0| / ||w_1 - w_0||_1 (the box does not bind: every
  coordinate has 0.3 of room and every radius is below 0.3).
  """
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(8, c)), jnp.float32)
  x = jnp.asarray(rng.uniform(0.3, 0.7, size=(n, 8)), jnp.float32)
  f = lambda z: z.reshape(z.shape[0], -1) @ w
  y = jnp.argmax(f(x), -1).astype(jnp.int32)
  d = np.asarray(w[:, 1] - w[:, 0])
  radius = np.abs(np.asarray(x) @ d) / np.abs(d).sum()
  return f, x, y, radius


# --- item 1: too few classes for a loss ---------------------------------------------------

def test_issue_example_dlr_on_two_classes_is_refused_and_ce_breaks_every_point():
  f, x, y, radius = linear_problem()
  assert radius.max() < 0.29          # the issue's premise: every point breakable at 0.35
  with pytest.raises(UserError, match=r"apgd: loss dlr needs >= 3 classes .* the model has 2"):
    attacks.apgd(f, x, y, key=KEY, eps=0.35, loss="dlr")
  # The losses defined on 2 classes break every point (all exact radii < 0.35): APGD-CE (the
  # issue's right value), APGDconf (best other class) and Square (margin). Square runs
  # AutoAttack's standard schedule (windows of 80% of the image until query 10): 200 queries,
  # as a random search it may miss the point at radius 0.29 in 50.
  for x_adv in (attacks.apgd(f, x, y, key=KEY, eps=0.35, loss="ce"),
                attacks.apgd(f, x, y, key=KEY, eps=0.35, loss="conf"),
                attacks.square(f, x, y, key=KEY, eps=0.35, n_queries=200)):
    np.testing.assert_array_equal(attacks.is_robust(f, x_adv, y), np.zeros(6, bool))
  # FAB-T has one target on 2 classes and gets within 1% of each exact radius (by hand
  # above; no adversarial point is closer).
  dist = np.asarray(attacks.fab_run(f, x, y, key=KEY, norm="linf", n_iter=30).dist)
  assert np.all(dist >= radius * (1 - 1e-5)) and np.all(dist <= radius * 1.01), (dist, radius)


@pytest.mark.parametrize("loss,c,need", [("dlr", 2, 3), ("dlr-targeted", 3, 4)])
def test_dlr_losses_refuse_too_few_classes_everywhere(loss, c, need):
  f, x, y, _ = linear_problem(c=c)
  logits = f(x)
  fn = common.attack_loss(loss, y_target=(y + 1) % c)
  # The loss itself, eagerly and under jit (the class count is static).
  for run in (fn, jax.jit(fn)):
    with pytest.raises(UserError, match=f"{loss}: needs >= {need} classes"):
      run(logits, y)
  with pytest.raises(UserError, match=f"needs >= {need} classes"):
    attacks.apgd(f, x, y, key=KEY, eps=0.35, loss=loss)
  if loss == "dlr":
    with pytest.raises(UserError, match="needs >= 3 classes"):
      attacks.pgd(f, x, y, key=KEY, eps=0.35, loss="dlr")
  # One class more is enough: the losses are then defined (finite, not all equal).
  f2, x2, y2, _ = linear_problem(c=need)
  value = common.attack_loss(loss, y_target=(y2 + 1) % need)(f2(x2), y2)
  assert np.all(np.isfinite(value)) and np.ptp(np.asarray(value)) > 0


def test_autoattack_skips_unsupported_attacks_with_a_warning_and_refuses_named_ones():
  f, x, y, _ = linear_problem()
  small = dict(n_iter=20, n_queries=50, n_target_classes=2, run_checks=False)
  # version="rand" on 2 classes: APGD-DLR is skipped, loudly (even without run_checks), and
  # APGD-CE still breaks every point (all radii < 0.35 by hand).
  rand = lambda z, k: f(z)
  with pytest.warns(UserWarning, match=r"apgd-dlr skipped: the model has 2 classes"):
    res = attacks.autoattack_run(rand, x, y, key=KEY, eps=0.35, version="rand", eot_iter=1,
                                 **small)
  np.testing.assert_array_equal(res.robust, np.zeros(6, bool))
  f3, x3, y3, _ = linear_problem(c=3)
  with pytest.warns(UserWarning, match=r"apgd-t skipped: the model has 3 classes"):
    attacks.autoattack_run(f3, x3, y3, key=KEY, eps=0.05, **small)
  with pytest.raises(UserError, match=r"apgd-t needs >= 4 classes .* the model has 3"):
    attacks.autoattack_run(f3, x3, y3, key=KEY, eps=0.05, attacks_to_run=["apgd-t"], **small)
  # AutoAttack's check: more targets than other classes.
  with pytest.warns(UserWarning, match="9 target classes asked for, the model has 2 other"):
    assert checks.check_n_classes(3, ["apgd-ce", "fab-t"], 9)


def test_zero_target_classes_are_refused_rather_than_reporting_everything_robust():
  f, x, y, _ = linear_problem(c=5)
  with pytest.raises(UserError, match="n_target_classes must be >= 1"):
    attacks.apgd(f, x, y, key=KEY, eps=0.35, loss="dlr-targeted", n_target_classes=0)
  with pytest.raises(UserError, match="n_target_classes and eot_iter must be >= 1"):
    attacks.autoattack_run(f, x, y, key=KEY, eps=0.35, n_target_classes=0)


def test_training_losses_need_another_class():
  one = jnp.zeros((3, 1))
  labels = jnp.zeros(3, jnp.int32)
  for fn in (lambda: losses.top_other_class(one, labels),
             lambda: losses.era(one, one, labels, beta=1.0),
             lambda: losses.dga(one, one, labels, beta=1.0),
             lambda: losses.mart(one, one, labels),
             lambda: losses.certified_radius(one[None], labels, sigma=0.25, top_two=True),
             lambda: common.conf(one, labels)):
    with pytest.raises(UserError, match=">= 2 classes"):
      fn()
  # Two classes: the best other class of [1, 3] given 1 is 0 (by hand).
  np.testing.assert_array_equal(losses.top_other_class(jnp.asarray([[1.0, 3.0]]),
                                                       jnp.asarray([1])), [0])


# --- item 7: labels and model outputs -----------------------------------------------------

def _label_entries(f, x):
  """Every attack entry point, as y -> result."""
  small = dict(key=KEY, eps=0.1)
  return {
      "apgd": lambda y: attacks.apgd(f, x, y, n_iter=2, **small),
      "apgd_run": lambda y: attacks.apgd_run(f, x, y, n_iter=2, loss="dlr-targeted",
                                             n_target_classes=1, **small),
      "pgd": lambda y: attacks.pgd(f, x, y, n_iter=2, **small),
      "fab": lambda y: attacks.fab(f, x, y, n_iter=2, n_target_classes=1, **small),
      "square": lambda y: attacks.square(f, x, y, n_queries=3, **small),
      "autoattack_run": lambda y: attacks.autoattack_run(
          f, x, y, n_iter=2, n_queries=3, n_target_classes=1, **small),
      "robust_at_radii": lambda y: attacks.robust_at_radii(f, x, y, key=KEY, radii=[0.1],
                                                           n_iter=2),
      "is_robust": lambda y: attacks.is_robust(f, x, y),
      "checks": lambda y: checks.run_all(f, x, y),
  }


@pytest.mark.parametrize("entry", list(_label_entries(None, None)))
def test_labels_outside_the_model_classes_are_refused(entry):
  """The issue's example: a 5-class model with labels 7 (also 5 = C and -1)."""
  f, x, _, _ = linear_problem(c=5)
  run = _label_entries(f, x)[entry]
  for bad in (7, 5, -1):
    with pytest.raises(UserError, match=r"y: labels span .* but there are 5 classes"):
      run(jnp.full(6, bad, jnp.int32))
  run(jnp.full(6, 4, jnp.int32))       # the last class is fine


def test_evaluation_and_certification_check_labels_against_the_model(tmp_path):
  from jax_abstain import models
  net = models.create("mlp", num_classes=5, in_features=8, hidden=(8,))
  _, x, _, _ = linear_problem(c=5)
  y = np.full(6, 7, np.int32)
  with pytest.raises(UserError, match="evaluate: y: labels span 7..7 but there are 5 classes"):
    empirical.evaluate_model(net, np.asarray(x), y, radii=["0.1"], key=KEY, progress=False)
  with pytest.raises(UserError, match="y: labels span 7..7 but there are 5 classes"):
    certified.certify_report(net, np.asarray(x), y, tmp_path / "c.csv", key=KEY, sigma=0.1,
                             n0=4, n=8, progress=False)
  with pytest.raises(UserError, match="labels span 7..7 but there are 5 classes"):
    live.evaluate_composition([net, net], np.asarray(x), y, eps="0.05", key=KEY, n_iter=2)
  assert not (tmp_path / "c.csv").exists() and not list(tmp_path.iterdir())


W8 = jnp.asarray(np.random.default_rng(1).normal(size=(8, 4)), jnp.float32)  # 4 classes
BAD_MODELS = {
    "one logit": (lambda z: z @ W8[:, :1], r"returns 1 logit\(s\) per input, a class "
                                           r"distribution needs >= 2"),
    "[B] output": (lambda z: (z @ W8)[:, 0], r"expected logits of shape \[6, C\]"),
    "[B, C, 1] output": (lambda z: (z @ W8)[..., None], r"expected logits of shape \[6, C\]"),
    "NaN logits": (lambda z: (z @ W8).at[2].set(jnp.nan), r"NaN or inf logits for 1 of 6 inputs "
                                                         r"\(first: input 2\)"),
}


@pytest.mark.parametrize("model", list(BAD_MODELS))
def test_models_whose_output_is_no_class_distribution_are_refused(model):
  f, match = BAD_MODELS[model]
  _, x, _, _ = linear_problem(c=3)
  y = jnp.zeros(6, jnp.int32)
  for run in _label_entries(f, x).values():
    with pytest.raises(UserError, match=match):
      run(y)


@pytest.mark.parametrize("model", ["one logit", "[B] output", "[B, C, 1] output"])
def test_smoothing_refuses_outputs_that_are_no_class_distribution(model):
  f, _ = BAD_MODELS[model]
  _, x, _, _ = linear_problem(c=3)
  for run in (lambda: smoothing.sample(f, x, 4, key=KEY, sigma=0.1),
              lambda: smoothing.predict(f, x, key=KEY, sigma=0.1, n=4),
              lambda: smoothing.certify(f, x, key=KEY, sigma=0.1, n0=2, n=4),
              lambda: smoothing.certify_at_radius(f, x, 0.1, key=KEY, sigma=0.1, n0=2, n=4)):
    with pytest.raises(UserError, match="smoothing: model: (returns 1 logit|expected logits)"):
      run()


def test_smoothing_refuses_nan_logits_under_noise_instead_of_counting_them():
  # Finite at x (sum 3.2) but NaN wherever the noisy copy's sum exceeds 4: with sigma 0.5 on 8
  # coordinates that is P(N(0, 8 * 0.25) > 0.8) = 0.29 of the draws (by hand), so some of 64.
  f = lambda z: jnp.where(z.sum(-1, keepdims=True) > 4.0, jnp.nan, z @ W8)
  x = jnp.full((1, 8), 0.4)
  with pytest.raises(UserError, match=r"NaN or inf logits for \d+ of 64 noisy copies of sample 0"):
    smoothing.certify(f, x, key=KEY, sigma=0.5, n0=64, n=64)


def test_under_jit_the_output_shape_is_still_checked():
  from flax import nnx

  class OneLogit(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(W8[:, :1])

    def __call__(self, z):
      return z @ self.w

  _, x, _, _ = linear_problem(c=3)
  run = attacks.jit_attack(OneLogit(), attacks.apgd, eps=0.1, n_iter=2)
  with pytest.raises(UserError, match=r"returns 1 logit"):
    run(x, jnp.zeros(6, jnp.int32), KEY)


# --- item 10: radii that cover the whole input box ----------------------------------------

@pytest.mark.parametrize("norm,covering,inside", [
    ("linf", 1.0, 0.999), ("l2", math.sqrt(8), 2.828), ("l1", 8.0, 7.99)])
def test_box_diameter_thresholds(norm, covering, inside):
  """The ball around any point of [0, 1]^8 covers the box iff eps >= the box's diameter: 1, sqrt(8)
  = 2.8284..., 8 (by hand: the far corner of a corner)."""
  assert validation.box_diameter(norm, 8) == pytest.approx(covering)
  with pytest.warns(UserWarning, match=rf"the {norm} radius .* covers the whole input box "
                                       r"\[0, 1\]\^8"):
    assert validation.check_radius_in_box(covering, norm, 8)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert not validation.check_radius_in_box(inside, norm, 8)
    assert not validation.check_radius_in_box(8 / 255, "linf")


def test_issue_example_linf_eps_8_warns_in_every_entry(tmp_path):
  from jax_abstain import models
  f, x, y, _ = linear_problem(c=3)
  net = models.create("mlp", num_classes=3, in_features=8, hidden=(8,))
  match = r"the linf radius 8 covers the whole input box \[0, 1\]\^8 .*8/255, not 8"
  for run in (lambda: attacks.apgd(f, x, y, key=KEY, eps=8.0, n_iter=2),
              lambda: attacks.pgd(f, x, y, key=KEY, eps=8.0, n_iter=2),
              lambda: attacks.fab(f, x, y, key=KEY, eps=8.0, n_iter=2, n_target_classes=1),
              lambda: attacks.square(f, x, y, key=KEY, eps=8.0, n_queries=3),
              lambda: attacks.autoattack_run(f, x, y, key=KEY, eps=8.0, n_iter=2, n_queries=3,
                                             n_target_classes=1, run_checks=False),
              lambda: attacks.robust_at_radii(f, x, y, key=KEY, radii=[0.1, 8.0], n_iter=2),
              lambda: empirical.evaluate_model(net, np.asarray(x), np.asarray(y), radii=["8"],
                                               key=KEY, n_iter=2, progress=False),
              lambda: empirical.evaluate_model(net, np.asarray(x), np.asarray(y), radii=[],
                                               conf_radii=["8"], key=KEY, n_iter=2,
                                               progress=False)):
    with pytest.warns(UserWarning, match=match):
      run()
  # Smoothing certifies L2 radii: sqrt(8) covers [0, 1]^8.
  with pytest.warns(UserWarning, match=r"eps: the l2 radius 2.9 covers the whole input box"):
    smoothing.certify_at_radius(f, x[:1], 2.9, key=KEY, sigma=0.5, n0=2, n=4)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    attacks.apgd(f, x, y, key=KEY, eps=8 / 255, n_iter=2)


def test_config_radii_that_cover_the_box_warn():
  from jax_abstain.configs import synth
  from jax_abstain.jobs import schema
  config = synth.get_config()
  config.eps = "8"
  with pytest.warns(UserWarning) as record:
    schema.check(config)
  where = [str(w.message).split(":")[0] for w in record]
  for field in ("config.eps", "config.compose.select_at", "config.eval.radii 8",
                "config.eval.radii 16", "config.models.era.eps", "config.models.era_branch.eps"):
    assert any(w.startswith(field) for w in where), (field, where)
  # The synthetic set is 2-D, so an L2 radius of 1.5 >= sqrt(2) = 1.414 covers its box too.
  config = synth.get_config()
  config.eps, config.norm = "1.5", "l2"
  with pytest.warns(UserWarning, match=r"config.eps: the l2 radius 1.5 covers .*\[0, 1\]\^2"):
    schema.check(config)
  with warnings.catch_warnings():
    warnings.simplefilter("error", UserWarning)
    schema.check(synth.get_config())
