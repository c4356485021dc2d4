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


def test_select_by_name_gives_the_hand_computed_selections():
  # Robustness indicator (docs/design.md, appendix A3/A6): by default is_rob at 2 eps, i.e. the
  # is_rob@2/255 column [1, 0, 0, 1] for eps 1/255 (sample 2 is robust at 1/255 only);
  # select_at reads another radius. Catches a selector reading the threat radius by default.
  np.testing.assert_array_equal(selectors.select(REPORT, "robustness", "1/255"), [1, 0, 0, 1])
  np.testing.assert_array_equal(selectors.select(REPORT, "robustness", "1/255", select_at="1/255"),
                                [1, 0, 1, 1])
  # Certified: selected iff not an abstention (-1) and radius >= eps; 0.25 itself is enough.
  cert = {"cert_pred": np.array([0, -1, 2, 1]), "radius": np.array([0.3, 0.9, 0.1, 0.25])}
  np.testing.assert_array_equal(selectors.select(cert, "certified", 0.25), [1, 0, 0, 1])
  # Robust softmax response: adv_conf@2/255 = [0.9, 0.2, 0.7, 0.5] >= tau.
  np.testing.assert_array_equal(selectors.select(REPORT, "softmax", "1/255", tau=0.5), [1, 0, 1, 1])
  np.testing.assert_array_equal(selectors.select(REPORT, "softmax", "1/255", tau=0.7), [1, 0, 1, 0])


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
