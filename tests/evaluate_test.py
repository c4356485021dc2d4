"""Per-sample evaluation reports: batch independence, nested radii, APGDconf, resume."""
import jax
import numpy as np
import pytest

from jax_abstain import data, evaluate, models, reports
from jax_abstain.errors import UserError

X, Y = data.load("synthetic", "test")
X, Y = X[::10], Y[::10]                       # 100 points
MODEL = models.create("mlp", num_classes=3, seed=0)
KW = dict(radii=["0.05", "0.2"], key=jax.random.key(0), n_iter=10, conf_radii=["0.1"],
          progress=False)


@pytest.fixture(scope="module")
def report():
  return evaluate.evaluate_model(MODEL, X, Y, batch_size=64, **KW)


def test_columns_and_nesting(report):
  assert list(report) == ["sample_idx", "label", "pred", "is_acc", "conf", "is_rob@0.05",
                          "is_rob@0.2", "adv_conf@0.1"]
  small, large = report["is_rob@0.05"].astype(bool), report["is_rob@0.2"].astype(bool)
  assert np.all(large <= small)                 # robust at 0.2 implies robust at 0.05
  assert small.mean() > large.mean()            # and the larger ball breaks more
  assert np.all((report["adv_conf@0.1"] > 0) & (report["adv_conf@0.1"] <= 1))


def test_independent_of_batch_size(report):
  other = evaluate.evaluate_model(MODEL, X, Y, batch_size=30, **KW)
  for name in report:
    np.testing.assert_allclose(report[name], other[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_resumes_from_a_partial_report(tmp_path, report):
  path = tmp_path / "r.csv"
  full = evaluate.evaluate_model(MODEL, X, Y, batch_size=64, report_path=path, **KW)
  text = path.read_text().splitlines()
  path.unlink()
  # A run killed after the first chunk of 64 rows, mid-way through writing row 65.
  (tmp_path / "r.csv.partial").write_text("\n".join(text[:65]) + "\n" + text[65][:5])
  resumed = evaluate.evaluate_model(MODEL, X, Y, batch_size=64, report_path=path, **KW)
  for name in full:
    np.testing.assert_array_equal(full[name], resumed[name])
  np.testing.assert_array_equal(reports.read_report(path)["sample_idx"], np.arange(100))


def test_bad_input():
  with pytest.raises(UserError, match=r"\[0, 1\]"):
    evaluate.evaluate_model(MODEL, X + 2.0, Y, **KW)
  with pytest.raises(UserError, match="radius"):
    evaluate.evaluate_model(MODEL, X, Y, **{**KW, "radii": ["1/0"]})
