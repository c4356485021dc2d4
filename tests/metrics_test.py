"""Pareto fronts (Fig. 2-4) on hand-made points."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from jax_abstain import metrics
from jax_abstain.errors import UserError


def test_pareto_front_both_axes_maximised():
  xs = [1, 2, 3, 2, 0.5, 3]
  ys = [5, 4, 1, 3, 5, 1]
  # (2, 3) is dominated by (2, 4); (0.5, 5) by (1, 5); the second (3, 1) duplicates the first.
  np.testing.assert_array_equal(metrics.pareto_front(xs, ys), [0, 1, 2])


def test_pareto_front_minimising_x_as_in_fig2():
  rob_inacc = [1.34, 0.29, 0.5, 0.1]
  rob_acc = [86.5, 83.8, 83.0, 70.0]
  np.testing.assert_array_equal(metrics.pareto_front(rob_inacc, rob_acc, maximize=(False, True)),
                                [3, 1, 0])


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25))
def test_front_points_are_undominated_and_cover_the_rest(points):
  xs, ys = (np.array(c, float) for c in zip(*points))
  front = metrics.pareto_front(xs, ys)
  dominates = lambda i, j: xs[i] >= xs[j] and ys[i] >= ys[j] and (xs[i] > xs[j] or ys[i] > ys[j])
  for i in front:
    assert not any(dominates(j, i) for j in range(len(xs)))
  for j in set(range(len(xs))) - set(front.tolist()):
    assert any(dominates(i, j) or (xs[i] == xs[j] and ys[i] == ys[j]) for i in front)


def test_pareto_front_rejects_mismatched_arrays():
  with pytest.raises(UserError, match="pareto_front"):
    metrics.pareto_front([1, 2], [1])
