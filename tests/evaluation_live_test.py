"""Live compositions (`evaluation.live`): H(x) by eq. 12, the live robustness selector, and the
live evaluation of trained models against the composition of their reports."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_abstain import compose, reports
from jax_abstain.errors import UserError
from jax_abstain.evaluation import empirical, live


def test_live_predict_matches_eq12():
  x = jnp.array([[0.1], [0.9], [0.5]])
  branch = lambda v: jnp.concatenate([v, 1 - v], -1)        # class 1 for x < 0.5
  core = lambda v: jnp.concatenate([1 - v, v], -1)          # class 1 for x > 0.5 (0 at ties)
  selector = lambda v: v[:, 0] < 0.3
  pred, answered = live.predict([branch, core], [selector], x)
  np.testing.assert_array_equal(answered, [0, 1, 1])
  np.testing.assert_array_equal(pred, [1, 1, 0])
  with pytest.raises(UserError, match="one selector per abstain model"):
    live.predict([branch, core], [], x)


def test_robustness_selector_on_a_linear_model():
  """Logits (s, -s) with s = w.x + b: the prediction survives every L-inf perturbation of
  radius eps iff |s| > eps * ||w||_1 (the worst case moves each coordinate by eps against w)."""
  w, b = jnp.array([0.5, -1.0]), 0.1
  logits = lambda x: jnp.stack([x @ w + b, -(x @ w + b)], -1)
  x = jnp.array([[0.9, 0.1], [0.4, 0.5], [0.2, 0.6], [0.7, 0.4], [0.6, 0.5]])
  # s = 0.45, -0.2, -0.4, 0.05, -0.1 against eps * ||w||_1 = 0.1 * 1.5 = 0.15 (every worst case
  # stays inside [0, 1]).
  select = live.robustness_selector(logits, eps=0.1, key=jax.random.key(0), n_iter=20)
  np.testing.assert_array_equal(select(x), [True, True, True, False, False])


def test_evaluate_composition_needs_a_selector_radius_per_abstain_model():
  with pytest.raises(UserError, match="one select_at per abstain model"):
    live.evaluate_composition([None, None, None], np.zeros((1, 2), np.float32), np.zeros(1, int),
                              eps="0.1", key=jax.random.key(0), select_at=["0.2"])


@pytest.mark.slow
def test_reports_of_trained_models_compose_like_the_live_composition(tmp_path):
  """Three MLPs trained here on the Figure 1 data: composing their per-sample reports (CSV
  written and read back) gives the numbers of the live composition H, evaluated by
  `live.predict` on live selectors and attacks on the model that answers each sample."""
  import ml_collections
  from jax_abstain import data, models
  from jax_abstain import training
  x, y = data.load("synthetic", "train")
  x_eval, y_eval = data.load("synthetic", "test")
  x_eval, y_eval = x_eval[::8], y_eval[::8]                        # 125 points
  base = dict(loss="std", beta=1.0, trades_beta=6.0, eps="0.1", norm="linf", variant="paper",
              epochs=2, batch_size=10, lr=0.03, momentum=0.9, weight_decay=1e-4, schedule="constant",
              attack_steps=2, attack_rel_step=0.25, bn_mode_attack="", bn_mode_loss="")
  trained = {}
  for name, seed, over in [("a", 0, {}), ("b", 1, dict(epochs=1, lr=0.01)), ("c", 2, dict(lr=0.1))]:
    model = models.create("mlp", num_classes=3, seed=seed)
    training.fit(model, x[::4], y[::4], ml_collections.ConfigDict({**base, **over}), workdir=tmp_path,
              name=name, progress=False)
    model.eval()
    trained[name] = model
  key = jax.random.key(0)
  for name, model in trained.items():
    empirical.evaluate_model(model, x_eval, y_eval, radii=["0.1", "0.2"], key=key, n_iter=10,
                             batch_size=128, progress=False, report_path=tmp_path / f"{name}.csv")
  for order in (["a", "b"], ["c", "a", "b"]):
    cols = [reports.read_report(tmp_path / f"{n}.csv") for n in order]
    from_reports, _, _, _ = compose.compose_reports_per_sample(cols, "0.1")
    comp, pred = live.evaluate_composition([trained[n] for n in order], x_eval, y_eval,
                                           eps="0.1", key=key, n_iter=10, batch_size=128)
    np.testing.assert_array_equal(comp.answered_by, from_reports.answered_by)
    np.testing.assert_array_equal(comp.is_acc, from_reports.is_acc)
    np.testing.assert_array_equal(comp.is_rob_acc, from_reports.is_rob_acc)
    chosen = np.stack([c["pred"] for c in cols])[from_reports.answered_by, np.arange(len(pred))]
    np.testing.assert_array_equal(pred, chosen)
    summary = compose.compose_reports(cols, "0.1")
    # (abs=0.005: equal whether the composition summary is rounded to two decimals or not.)
    assert summary["nat_acc"] == pytest.approx(100 * comp.is_acc.mean(), abs=0.005)
    assert summary["rob_acc"] == pytest.approx(100 * comp.is_rob_acc.mean(), abs=0.005)
    # A non-trivial composition: every model answers some samples.
    assert 0 < summary["rob_sel"] < 100 and min(summary["answered_share"]) > 0
