"""Selectors from per-sample reports: robustness indicator, softmax response, by name, errors."""
import numpy as np
import pytest

from jax_abstain import selectors
from jax_abstain.errors import UserError

REPORT = {"sample_idx": np.arange(4), "label": np.array([0, 1, 2, 0]), "is_acc": np.array([1, 1, 0, 1]),
          "conf": np.array([0.95, 0.6, 0.99, 0.4]), "is_rob@1/255": np.array([1, 0, 1, 1]),
          "is_rob@2/255": np.array([1, 0, 0, 1]), "adv_conf@2/255": np.array([0.9, 0.2, 0.7, 0.5])}


def test_robust_softmax_response_reads_apgdconf_at_2eps():
  np.testing.assert_array_equal(selectors.softmax_indicator(REPORT, "1/255", 0.6), [1, 0, 1, 0])
  np.testing.assert_array_equal(selectors.select(REPORT, "softmax", "1/255", tau=0.8), [1, 0, 0, 0])
  # The natural form uses the clean confidence and needs no attack column.
  np.testing.assert_array_equal(selectors.select(REPORT, "softmax-natural", "1/255", tau=0.6),
                                [1, 1, 1, 0])
  # tau = 0 selects everything, tau = 1 only confidence exactly 1.
  assert selectors.softmax_indicator(REPORT, "1/255", 0.0).all()
  assert not selectors.softmax_indicator(REPORT, "1/255", 1.0).any()


def test_select_by_name_matches_the_functions():
  np.testing.assert_array_equal(selectors.select(REPORT, "robustness", "1/255"),
                                selectors.robustness_indicator(REPORT, "1/255"))
  np.testing.assert_array_equal(selectors.select(REPORT, "robustness", "1/255", select_at="1/255"),
                                [1, 0, 1, 1])
  cert = {"cert_pred": np.array([0, -1, 2]), "radius": np.array([0.3, 0.9, 0.1])}
  np.testing.assert_array_equal(selectors.select(cert, "certified", 0.25), [1, 0, 0])


@pytest.mark.parametrize("kwargs,message", [
    (dict(selector="entropy", eps="1/255"), "selector: expected one of robustness, softmax"),
    (dict(selector="softmax", eps="1/255"), "give a threshold tau"),
    (dict(selector="softmax", eps="2/255", tau=0.5), "no column adv_conf@4/255; available: adv_conf@2/255"),
    (dict(selector="robustness", eps="2/255"), "no column is_rob@4/255; available: is_rob@1/255, is_rob@2/255"),
    (dict(selector="certified", eps=0.25), "no column cert_pred"),
    (dict(selector="softmax", eps="1/255", tau=1.5), r"tau: expected a finite number in \[0.0, 1.0\]"),
])
def test_bad_selector_requests_name_the_problem(kwargs, message):
  with pytest.raises(UserError, match=message.replace("(", r"\(")) as e:
    selectors.select(REPORT, **kwargs)
  assert "\n" not in str(e.value)
