"""Per-sample evaluation reports: batch independence, nested radii, APGDconf, resume."""
import json

import jax
import numpy as np
import pytest

from jax_abstain import data, models, reports
from jax_abstain.evaluation import empirical as evaluate
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


@pytest.mark.slow
def test_autoattack_columns_keep_their_names_and_only_remove_robustness():
  kw = dict(radii=["0.05", "0.2"], key=jax.random.key(0), progress=False, batch_size=50,
            attack="autoattack")
  x, y = X[::2], Y[::2]
  ce = evaluate.evaluate_model(MODEL, x, y, aa_options={"attacks_to_run": ["apgd-ce"], "n_iter": 5}, **kw)
  both = evaluate.evaluate_model(MODEL, x, y, aa_options={"attacks_to_run": ["apgd-ce", "fab-t"],
                                                          "n_iter": 5}, **kw)
  assert list(both) == ["sample_idx", "label", "pred", "is_acc", "conf", "is_rob@0.05", "is_rob@0.2"]
  for r in ("0.05", "0.2"):
    # The ensemble runs the same APGD-CE first (same keys), then FAB-T on the survivors.
    assert np.all(both[f"is_rob@{r}"] <= ce[f"is_rob@{r}"])
  assert np.all(both["is_rob@0.2"] <= both["is_rob@0.05"])
  assert 0 < both["is_rob@0.2"].mean() < both["is_rob@0.05"].mean()
  with pytest.raises(UserError, match="attack: expected one of apgd-ce, autoattack"):
    evaluate.evaluate_model(MODEL, x, y, **{**kw, "attack": "pgd"})


def test_finished_report_is_reused_and_other_settings_are_refused(tmp_path):
  path = tmp_path / "r.csv"
  kw = dict(radii=["0.1"], key=jax.random.key(0), n_iter=3, progress=False, batch_size=20,
            report_path=path)
  first = evaluate.evaluate_model(MODEL, X[:20], Y[:20], **kw)
  stamp = path.stat().st_mtime_ns
  again = evaluate.evaluate_model(MODEL, X[:20], Y[:20], **kw)
  assert path.stat().st_mtime_ns == stamp                     # read back, not recomputed
  np.testing.assert_array_equal(first["is_rob@0.1"], again["is_rob@0.1"])
  with pytest.raises(UserError, match=r"different settings \(n_iter\)"):
    evaluate.evaluate_model(MODEL, X[:20], Y[:20], **{**kw, "n_iter": 4})
  other = models.create("mlp", num_classes=3, seed=1)
  with pytest.raises(UserError, match=r"different settings \(model\)"):
    evaluate.evaluate_model(other, X[:20], Y[:20], **kw)


@pytest.mark.slow
def test_certified_mode_writes_empirical_and_certified_reports(tmp_path):
  from jax_abstain.configs import evaluate_certified
  _, options = models.resolve("mlp", num_classes=3)
  model_dir = models.save(models.create("mlp", num_classes=3, seed=0), tmp_path / "m", arch="mlp",
                          options=options)
  config = evaluate_certified.get_config(f"model={model_dir},data=synthetic,limit=12,sigma=0.1,"
                                         "n=200,attack_eps=0.05,radii=0.05;0.1")
  config.eval.n_iter = 5
  results = evaluate.run(config, tmp_path / "wd")
  emp = reports.read_report(tmp_path / "wd" / "reports" / "model.csv")
  cert = reports.read_report(tmp_path / "wd" / "reports" / "model_cert.csv")
  assert "is_rob@0.1" in emp and "cert_pred" not in emp
  assert list(cert)[-2:] == ["cert_pred", "radius"] and len(cert["radius"]) == 12
  np.testing.assert_array_equal(cert["sample_idx"], emp["sample_idx"])   # evenly spaced subset
  at = results["model_cert"]["at"]
  assert set(at) == {"0.05", "0.1"} and at["0.1"]["commit_rate"] <= at["0.05"]["commit_rate"]
  committed = (cert["cert_pred"] >= 0) & (cert["radius"] >= 0.05)
  assert at["0.05"]["commit_rate"] == round(100 * committed.mean(), 2)
  saved = json.loads((tmp_path / "wd" / "results.json").read_text())
  assert saved["model"]["at"]["0.05"]["rob_acc"] == results["model"]["at"]["0.05"]["rob_acc"]
