"""Per-sample evaluation reports: batch independence, nested radii, APGDconf, resume; the one
entry `evaluation.evaluate`, its summaries and the evaluate job."""
import json
import types

import jax
import ml_collections
import numpy as np
import pytest
from scipy import optimize, special

from jax_abstain import data, evaluation, models, reports
from jax_abstain.errors import SoundnessError, UserError
from jax_abstain.evaluation import empirical as evaluate
from jax_abstain.evaluation import summary
from jax_abstain.evaluation.config import EvalConfig
from jax_abstain.jobs import evaluate as evaluate_job

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


def _nearest_centre_model():
  """A linear NNX model on the synthetic 2-D data: logits ``W^T x + b`` of a nearest-centre
  classifier for the three Gaussians' centres (docs/design.md, appendix A8), scale 10."""
  centres = np.array([[0.25, 0.25], [0.75, 0.75], [0.55, 0.80]])
  w, b = 10.0 * centres.T, -5.0 * (centres ** 2).sum(1)
  net = models.create("mlp", num_classes=3, in_features=2, hidden=(), seed=0)
  net.head.kernel.value = jax.numpy.asarray(w, np.float32)
  net.head.bias.value = jax.numpy.asarray(b, np.float32)
  return net, w, b


def test_adv_conf_is_the_confidence_at_the_best_apgdconf_point():
  # APGDconf (eq. 17) maximises log p_c(x') for the best class c != F(x) over the Linf ball
  # (clipped to [0, 1]); for a linear model each log p_c is concave, so SciPy's bounded
  # L-BFGS-B finds the optimum of each c, and the report must hold the max softmax there.
  net, w, b = _nearest_centre_model()
  rep = evaluate.evaluate_model(net, X, Y, batch_size=64, **KW)
  assert 0 < np.mean(rep["is_rob@0.2"]) < np.mean(rep["is_rob@0.05"]) < 1
  expected = []
  for xi, p in zip(np.asarray(X, np.float64), rep["pred"]):
    bounds = list(zip(np.maximum(xi - 0.1, 0), np.minimum(xi + 0.1, 1)))
    runs = [optimize.minimize(lambda v, c=c: special.logsumexp(v @ w + b) - (v @ w + b)[c], xi,
                              bounds=bounds, method="L-BFGS-B") for c in range(3) if c != p]
    best = min(runs, key=lambda r: r.fun)
    expected.append(special.softmax(best.x @ w + b).max())
  np.testing.assert_allclose(rep["adv_conf@0.1"], expected, atol=2e-3)
  assert np.mean(np.abs(rep["adv_conf@0.1"] - rep["conf"]) > 0.05) > 0.5  # not the clean conf


def test_a_bad_apgdconf_point_is_caught(monkeypatch):
  # The APGDconf points behind adv_conf go through the soundness guard like every attack
  # result: a point outside its ball is a SoundnessError, not a confidence in the report.
  attack = evaluate.runner_lib.ModelRunner.attack

  def off_by_eps(self, x, y, keys, eps, loss):
    x_adv, conf = attack(self, x, y, keys, eps, loss)
    return (jax.numpy.clip(x + 1.5 * eps[:, None], 0, 1), conf) if loss == "conf" else (x_adv, conf)

  monkeypatch.setattr(evaluate.runner_lib.ModelRunner, "attack", off_by_eps)
  with pytest.raises(SoundnessError, match="apgd-conf at radius 0.1: returned a point outside"):
    evaluate.evaluate_model(MODEL, X, Y, batch_size=64, **KW)


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


def test_evaluate_dispatches_on_kind_and_summarises_unrounded(tmp_path):
  cfg = EvalConfig(radii=("0.05", "0.2"), n_iter=10, conf_radii=("0.1",), batch_size=64)
  got = evaluation.evaluate(MODEL, X, Y, cfg, report_path=tmp_path / "e.csv", progress=False)
  cols = evaluate.evaluate_model(MODEL, X, Y, batch_size=64, **KW)   # the same keys (seed 0)
  acc = cols["is_acc"].astype(bool)
  rob = {r: cols[f"is_rob@{r}"].astype(bool) for r in ("0.05", "0.2")}
  assert got == {
      "kind": "empirical", "n": 100, "nat_acc": 100 * acc.mean(), "attack": "apgd-ce",
      "at": {r: {"rob_acc": 100 * (rob[r] & acc).mean(), "rob_inacc": 100 * (rob[r] & ~acc).mean(),
                 "splits": {"rob_acc": 100 * (rob[r] & acc).mean(),
                            "rob_inacc": 100 * (rob[r] & ~acc).mean(),
                            "nonrob_acc": 100 * (~rob[r] & acc).mean(),
                            "nonrob_inacc": 100 * (~rob[r] & ~acc).mean()}}
             for r in ("0.05", "0.2")}}
  settings = json.loads((tmp_path / "e.csv.settings.json").read_text())
  assert settings["model"] == evaluation.runner.model_identity(MODEL)
  # A mapping of EvalConfig fields is checked and accepted too; a certified kind certifies.
  cert = evaluation.evaluate(MODEL, X[:6], Y[:6], {"kind": "certified", "sigma": 0.1, "n0": 20,
                                                    "n": 100, "radii": [0.05]},
                             report_path=tmp_path / "c.csv", progress=False)
  assert cert["kind"] == "certified" and cert["sigma"] == 0.1 and list(cert["at"]) == ["0.05"]
  assert list(reports.read_report(tmp_path / "c.csv"))[-2:] == ["cert_pred", "radius"]
  with pytest.raises(UserError, match="^eval.n_iter: expected an integer >= 1, got 0$"):
    evaluation.evaluate(MODEL, X, Y, {"radii": ["0.1"], "n_iter": 0}, report_path=tmp_path / "x.csv")
  with pytest.raises(UserError, match="give at least one radius"):
    evaluation.evaluate(MODEL, X, Y, EvalConfig(), report_path=tmp_path / "x.csv")
  assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.csv.settings.json").exists()


def test_summaries_and_their_text_by_hand():
  cols = {"is_acc": np.array([1, 1, 0, 0, 1, 1]), "is_rob@1/255": np.array([1, 0, 1, 0, 1, 1]),
          "label": np.array([0, 1, 2, 0, 1, 2]), "cert_pred": np.array([0, 1, 1, -1, 1, 2]),
          "radius": np.array([0.3, 0.1, 0.5, 0.0, 0.25, 0.2])}
  emp = summary.summarize(cols, EvalConfig(radii=("1/255",)))
  # 3 of 6 robust and accurate, 1 robust and inaccurate: percent of 6, not rounded.
  assert emp == {"kind": "empirical", "n": 6, "nat_acc": 100 * (4 / 6), "attack": "apgd-ce",
                 "at": {"1/255": {"rob_acc": 50.0, "rob_inacc": 100 * (1 / 6),
                                  "splits": {"rob_acc": 50.0, "rob_inacc": 100 * (1 / 6),
                                             "nonrob_acc": 100 * (1 / 6), "nonrob_inacc": 100 * (1 / 6)}}}}
  cert = summary.summarize(cols, EvalConfig(kind="certified", sigma=0.25, radii=("0.25",)))
  # Committed at 0.25: samples 0 (right), 2 (wrong), 4 (right, R == eps counts).
  assert cert == {"kind": "certified", "n": 6, "nat_acc": 100 * (4 / 6), "sigma": 0.25,
                  "at": {"0.25": {"cert_acc": 100 * (2 / 6), "cert_inacc": 100 * (1 / 6), "commit_rate": 50.0,
                                  "commit_prec": 100 * 2 / 3, "nat_acc": 100 * (4 / 6)}}}
  assert summary.format_summary("era", emp).splitlines() == [
      "era: natural accuracy 66.67% on 6 samples",
      "  eps=1/255    rob_acc  50.00  rob_inacc  16.67"]
  assert summary.format_summary("cra", cert).splitlines() == [
      "cra: natural accuracy 66.67% on 6 samples",
      "  L2 radius=0.25   cert_acc  33.33  cert_inacc  16.67  commit_rate  50.00"]


def test_check_labels():
  summary.check_labels(np.array([0, 2, 1]), 3, "config.data")
  with pytest.raises(UserError, match="^config.data: the data split is empty$"):
    summary.check_labels(np.array([], np.int32), 3, "config.data")
  with pytest.raises(UserError, match=r"^config.data: labels span 0..3 but there are 3 classes"):
    summary.check_labels(np.array([0, 3]), 3, "config.data")


def _job(model_dir, limit=12, **eval_fields):
  """A stand-in for the checked `jobs.schema.Job` (the attributes the evaluate job reads)."""
  return types.SimpleNamespace(
      name="mlp", model=types.SimpleNamespace(dir=str(model_dir)),
      data=ml_collections.ConfigDict(dict(name="synthetic", path="", split="test",
                                          eval_limit=limit)),
      eval=EvalConfig(**eval_fields))


def test_evaluate_job_writes_report_and_results(tmp_path, capsys):
  _, options = models.resolve("mlp", num_classes=3)
  model_dir = models.save(MODEL, tmp_path / "m", arch="mlp", options=options)
  results = evaluate_job.run(_job(model_dir, radii=("0.05", "0.1"), n_iter=5), tmp_path / "wd")
  emp = reports.read_report(tmp_path / "wd" / "reports" / "mlp.csv")
  # 12 evenly spaced samples of the 1000 test points: 0, 91, ..., 999.
  np.testing.assert_array_equal(emp["sample_idx"], np.linspace(0, 999, 12).round())
  assert results["mlp"]["report"] == "reports/mlp.csv" and results["mlp"]["n"] == 12
  assert results["mlp"]["at"]["0.1"]["rob_acc"] == 100 * np.mean(emp["is_acc"] & emp["is_rob@0.1"])
  assert json.loads((tmp_path / "wd" / "results.json").read_text()) == json.loads(json.dumps(results))
  assert capsys.readouterr().out.startswith("mlp: natural accuracy ")
  cert = evaluate_job.run(_job(model_dir, kind="certified", sigma=0.1, n=200, radii=("0.05", "0.1")),
                          tmp_path / "cert")
  cols = reports.read_report(tmp_path / "cert" / "reports" / "mlp.csv")
  assert list(cols)[-2:] == ["cert_pred", "radius"] and len(cols["radius"]) == 12
  np.testing.assert_array_equal(cols["sample_idx"], emp["sample_idx"])
  at = cert["mlp"]["at"]
  committed = (cols["cert_pred"] >= 0) & (cols["radius"] >= 0.05)
  assert at["0.05"]["commit_rate"] == 100 * committed.mean()
  assert at["0.1"]["commit_rate"] <= at["0.05"]["commit_rate"]
  with pytest.raises(UserError, match="^config.data: labels span 0..2 but there are 2 classes"):
    small = models.save(models.create("mlp", num_classes=2, seed=0), tmp_path / "m2", arch="mlp",
                        options=models.resolve("mlp", num_classes=2)[1])
    evaluate_job.run(_job(small, limit=0, radii=("0.1",)), tmp_path / "bad")
  assert not (tmp_path / "bad").exists()
