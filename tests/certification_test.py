"""The certified per-sample report (`evaluation.certified`), its resumption after a kill, the
refusal to resume with other settings or another model, the certified metrics, compose on the
report, and the certify command line (`cli.certify`)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_abstain import compose, models, reports, smoothing
from jax_abstain.cli import certify as certify_cli
from jax_abstain.errors import UserError
from jax_abstain.evaluation import certified as certification
from jax_abstain.evaluation import runner
from tiny_digits_model import train_and_save

KEY = jax.random.key(7)
W, B = np.array([0.6, 0.8], np.float32), -0.7
SETTINGS = dict(key=KEY, sigma=0.25, n0=50, n=600, alpha=0.001, batch_size=256)


def linear_fn(z):
  s = z @ jnp.asarray(W) + B
  return jnp.stack([-s, s], -1)


def toy_data(num=10, seed=0):
  x = np.random.default_rng(seed).uniform(0, 1, (num, 2)).astype(np.float32)
  y = (x @ W + B > 0).astype(np.int32)
  y[::4] = 1 - y[::4]   # some label noise, so that robust inaccuracy exists
  return x, y


class _Killer:
  """Wraps smoothing.certify; raises KeyboardInterrupt (a kill) at call number `at`."""

  def __init__(self, at=None):
    self.at, self.calls, self.inner = at, 0, smoothing.certify

  def __call__(self, *args, **kwargs):
    self.calls += 1
    if self.at is not None and self.calls == self.at:
      raise KeyboardInterrupt
    return self.inner(*args, **kwargs)


def test_report_columns_and_values(tmp_path):
  x, y = toy_data()
  cols = certification.certify_report(linear_fn, x, y, tmp_path / "r.csv", progress=False,
                                      **SETTINGS)
  header = (tmp_path / "r.csv").read_text().splitlines()[0]
  assert header == "sample_idx,label,pred,is_acc,conf,cert_pred,radius"
  pred, radius = smoothing.certify(linear_fn, x, **SETTINGS)
  np.testing.assert_array_equal(cols["cert_pred"], pred)
  np.testing.assert_allclose(cols["radius"], radius, rtol=1e-5)
  clean = np.asarray(jax.nn.softmax(linear_fn(jnp.asarray(x)), -1))
  np.testing.assert_array_equal(cols["pred"], clean.argmax(-1))
  np.testing.assert_array_equal(cols["is_acc"], clean.argmax(-1) == y)
  np.testing.assert_allclose(cols["conf"], clean.max(-1), rtol=1e-5)
  np.testing.assert_array_equal(cols["label"], y)
  assert not (tmp_path / "r.csv.partial").exists()


def test_killed_run_resumes_to_identical_report(tmp_path, monkeypatch):
  x, y = toy_data()
  certification.certify_report(linear_fn, x, y, tmp_path / "full.csv", progress=False, **SETTINGS)
  killer = _Killer(at=3)   # batch_size 256: 256 // 100 = 2 samples per call
  monkeypatch.setattr(smoothing, "certify", killer)
  path = tmp_path / "r.csv"
  with pytest.raises(KeyboardInterrupt):
    certification.certify_report(linear_fn, x, y, path, progress=False, **SETTINGS)
  partial = path.with_name("r.csv.partial")
  assert not path.exists() and len(partial.read_text().splitlines()) == 1 + 4
  with partial.open("a") as f:
    f.write("4,1,0,0,0.5")   # a row torn by the kill, without its newline
  resumed = _Killer()
  monkeypatch.setattr(smoothing, "certify", resumed)
  # A different batch size is allowed: it does not change the results (64: one sample a call).
  certification.certify_report(linear_fn, x, y, path, progress=False,
                               **(SETTINGS | dict(batch_size=64)))
  assert resumed.calls == len(x) - 4
  assert path.read_text() == (tmp_path / "full.csv").read_text()
  # A finished report is read back, not recomputed.
  certification.certify_report(linear_fn, x, y, path, progress=False, **SETTINGS)
  assert resumed.calls == len(x) - 4


@pytest.mark.parametrize("change, name", [
    (dict(sigma=0.5), "sigma"), (dict(n=700), "n"), (dict(key=jax.random.key(8)), "key"),
    (dict(alpha=0.01), "alpha")])
def test_refuses_to_resume_with_other_settings(tmp_path, monkeypatch, change, name):
  x, y = toy_data()
  monkeypatch.setattr(smoothing, "certify", _Killer(at=3))
  with pytest.raises(KeyboardInterrupt):
    certification.certify_report(linear_fn, x, y, tmp_path / "r.csv", progress=False, **SETTINGS)
  monkeypatch.setattr(smoothing, "certify", _Killer())
  with pytest.raises(UserError, match=rf"different settings \({name}\)"):
    certification.certify_report(linear_fn, x, y, tmp_path / "r.csv", progress=False,
                                 **(SETTINGS | change))
  with pytest.raises(UserError, match=r"different settings \(model\)"):
    certification.certify_report(lambda z: -linear_fn(z), x, y, tmp_path / "r.csv",
                                 progress=False, **SETTINGS)


def test_model_identity_is_the_weights(tmp_path):
  """Two NNX models with different weights have different identities; the same weights in
  another module object the same; a report of one is never completed with the other."""
  x = np.random.default_rng(0).uniform(0, 1, (3, 2)).astype(np.float32)
  y = np.array([0, 1, 2])
  a, b = (models.create("mlp", num_classes=3, seed=s) for s in (0, 1))
  again = models.create("mlp", num_classes=3, seed=0)
  assert runner.model_identity(a) == runner.model_identity(again) != runner.model_identity(b)
  assert len(runner.model_identity(a)) == 16
  settings = dict(key=KEY, sigma=0.25, n0=10, n=50, progress=False)
  certification.certify_report(a, x, y, tmp_path / "r.csv", **settings)
  assert json.loads((tmp_path / "r.csv.settings.json").read_text())["model"] == \
      runner.model_identity(a)
  certification.certify_report(again, x, y, tmp_path / "r.csv", **settings)   # re-read
  with pytest.raises(UserError, match=r"different settings \(model\)"):
    certification.certify_report(b, x, y, tmp_path / "r.csv", **settings)


def test_subset_indices_and_bad_input(tmp_path):
  x, y = toy_data(6)
  idx = np.array([10, 3, 42, 7, 0, 5])
  cols = certification.certify_report(linear_fn, x, y, tmp_path / "r.csv", indices=idx,
                                      progress=False, **SETTINGS)
  np.testing.assert_array_equal(cols["sample_idx"], np.sort(idx))
  pred, _ = smoothing.certify(linear_fn, x, indices=idx, **SETTINGS)
  np.testing.assert_array_equal(cols["cert_pred"], pred[np.argsort(idx)])
  with pytest.raises(UserError, match="^y:"):
    certification.certify_report(linear_fn, x, y[:3], tmp_path / "s.csv", **SETTINGS)
  with pytest.raises(UserError, match="^sigma:"):
    certification.certify_report(linear_fn, x, y, tmp_path / "s.csv", **(SETTINGS | dict(sigma=0)))


def test_summarize_hand_computed():
  cols = {"label": np.array([0, 1, 1, 0, 2]), "cert_pred": np.array([0, 0, 1, -1, 2]),
          "radius": np.array([0.5, 0.3, 0.1, 0.0, 0.25]), "is_acc": np.array([1, 0, 1, 1, 1])}
  got = certification.summarize(cols, 0.25)
  # committed: 0 (acc), 1 (inacc), 4 (acc, R == eps counts)
  assert got == {"cert_acc": 40.0, "cert_inacc": 20.0, "commit_rate": 60.0,
                 "commit_prec": pytest.approx(200 / 3), "nat_acc": 80.0}
  linf = certification.summarize(cols, 0.25 / np.sqrt(4), linf_dim=4)
  assert linf["commit_rate"] == 60.0


def test_compose_accepts_certified_report(tmp_path):
  x, y = toy_data(12)
  cols = certification.certify_report(linear_fn, x, y, tmp_path / "cert.csv", progress=False,
                                      **SETTINGS)
  core = {"sample_idx": cols["sample_idx"], "label": cols["label"],
          "pred": cols["label"], "is_acc": np.ones(12, np.int64),
          "conf": np.ones(12)}   # an always-accurate, non-certifiable core
  reports.write_report(tmp_path / "core.csv", core)
  eps = 0.1
  result = compose.compose_reports(
      [reports.read_report(tmp_path / "cert.csv"), reports.read_report(tmp_path / "core.csv")],
      eps)
  summary = certification.summarize(cols, eps)
  # (abs=0.005: equal whether the composition summary is rounded to two decimals or not.)
  assert result["rob_sel"] == pytest.approx(summary["commit_rate"], abs=0.005)
  assert result["commit_prec"] == pytest.approx(summary["commit_prec"], abs=0.005)
  # Selected samples answer with the certified prediction, the rest with the (accurate) core.
  assert result["nat_acc"] == pytest.approx(100 - summary["cert_inacc"], abs=0.005)
  assert result["rob_acc"] == pytest.approx(summary["cert_acc"], abs=0.005)


def test_certify_command_line_writes_report_and_summary(tmp_path, capsys):
  model_dir = train_and_save(tmp_path / "model", steps=20)
  out, summary_path = tmp_path / "cert" / "r.csv", tmp_path / "cert" / "s.json"
  result = certify_cli.certify(["--model", str(model_dir), "--data", "digits", "--limit", "8",
                                "--sigma", "0.25", "--n0", "20", "--n", "200", "--out", str(out),
                                "--eps", "0.1", "0.25", "--json", str(summary_path)])
  cols = reports.read_report(out)
  assert len(cols["radius"]) == 8
  committed = (cols["cert_pred"] >= 0) & (cols["radius"] >= 0.25)
  right = committed & (cols["cert_pred"] == cols["label"])
  assert result["report"] == str(out) and result["kind"] == "certified" and result["n"] == 8
  assert result["at"]["0.25"]["commit_rate"] == 100 * committed.mean()
  assert result["at"]["0.25"]["cert_acc"] == 100 * right.mean()
  assert result["nat_acc"] == 100 * cols["is_acc"].mean()
  assert json.loads(summary_path.read_text()) == result
  printed = capsys.readouterr().out.splitlines()
  assert printed[0] == f"{out}: natural accuracy {result['nat_acc']:.2f}% on 8 samples"
  # The settings sidecar ties the report to the weights, like an attack report.
  settings = json.loads((tmp_path / "cert" / "r.csv.settings.json").read_text())
  assert settings["model"] == runner.model_identity(models.load(model_dir))
