"""Metrics, selectors and radii on hand-made arrays."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from jax_abstain import metrics, radii, selectors
from jax_abstain.errors import UserError

ACC = np.array([1, 1, 0, 0, 1, 0, 1, 1])
ROB = np.array([1, 0, 1, 0, 1, 0, 0, 1])


def test_summary_and_splits():
  s = metrics.summary(ACC, ROB)
  assert s["nat_acc"] == 62.5
  assert s["rob_acc"] == 37.5          # samples 0, 4, 7
  assert s["rob_inacc"] == 12.5        # sample 2
  assert s["splits"] == {"rob_acc": 37.5, "rob_inacc": 12.5, "nonrob_acc": 25.0, "nonrob_inacc": 25.0}
  assert metrics.robust_selection(ROB) == 50.0
  assert metrics.commit_precision(ACC, ROB, ROB) == 75.0


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=50))
def test_four_splits_sum_to_100(pairs):
  a, r = np.array(pairs).T
  assert abs(sum(metrics.four_splits(a, r).values()) - 100.0) < 1e-9


def test_metrics_reject_bad_arrays():
  with pytest.raises(UserError, match="expected 8 samples"):
    metrics.robust_accuracy(ACC, ROB[:3])
  with pytest.raises(UserError, match="0/1"):
    metrics.natural_accuracy(np.array([0, 2]))


@pytest.mark.parametrize("text,value", [("1/255", 1 / 255), ("0.5", 0.5), ("8 / 255", 8 / 255),
                                        ("2e-3", 0.002), (0.25, 0.25)])
def test_parse_radius(text, value):
  assert radii.parse_radius(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["0", "-1", "1/0", "abc", "", "nan", "inf", "1/255/2", True, -0.5])
def test_parse_radius_rejects(text):
  with pytest.raises(UserError):
    radii.parse_radius(text)


def test_format_and_double_radius():
  assert radii.format_radius(2 / 255) == "2/255"
  assert radii.format_radius(0.1) == "0.1"
  assert radii.double_radius("1/255") == "2/255"
  assert radii.double_radius("0.1") == "0.2"
  assert radii.double_radius("0.25") == "0.5"


def test_robustness_indicator_defaults_to_2eps():
  cols = {"is_rob@1/255": np.array([1, 1, 0]), "is_rob@2/255": np.array([1, 0, 0])}
  np.testing.assert_array_equal(selectors.robustness_indicator(cols, "1/255"), [True, False, False])
  np.testing.assert_array_equal(selectors.robustness_indicator(cols, "1/255", select_at="1/255"),
                                [True, True, False])
  with pytest.raises(UserError, match="is_rob@4/255"):
    selectors.robustness_indicator(cols, "2/255")


def test_certified_and_softmax_selectors():
  np.testing.assert_array_equal(
      selectors.certified_indicator([0, -1, 2, 1], [0.3, 0.9, 0.1, 0.25], 0.25), [1, 0, 0, 1])
  np.testing.assert_array_equal(selectors.softmax_response([0.2, 0.9, 0.5], 0.5), [0, 1, 1])
  with pytest.raises(UserError, match="tau"):
    selectors.softmax_response([0.2], 1.5)
