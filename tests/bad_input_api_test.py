"""Bad input through the library: one-line `UserError`s naming the argument and the expected
form, raised before anything is written (every case runs in an empty folder that must stay
empty)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jax_abstain import attacks, data, files, models, porting, reports, smoothing, soundness, validation
from jax_abstain.configs import common as config_args
from jax_abstain.evaluation import certified, empirical
from jax_abstain.jobs import schema, workdir
from jax_abstain.errors import SoundnessError, UserError

W = np.array([[0.6, -0.4, 0.1], [0.8, 0.3, -0.5]], np.float32)


def linear(z):
  return z.reshape(z.shape[0], -1) @ jnp.asarray(W)


X = np.full((2, 2), 0.5, np.float32)
Y = np.zeros(2, np.int32)
KEY = jax.random.key(0)
MLP = models.create("mlp", num_classes=3, in_features=2, hidden=(4,))
MLP.eval()


def _apgd(**kw):
  args = dict(x=X, y=Y, key=KEY, eps=0.1) | kw
  return lambda d: attacks.apgd(linear, args.pop("x"), args.pop("y"), n_iter=2, **args)


def _config(**changes):
  config = ml_collections.ConfigDict({"mode": "train", "seed": 0, "name": "m",
                                      "eval": {"radii": ("0.1", "0.2"), "n_iter": 5, "norm": "linf"},
                                      "data": {"name": "digits", "path": "", "eval_limit": 0},
                                      "model": {"name": "small-cnn", "num_classes": 10,
                                                "options": {"in_channels": 1}}})
  for key, value in changes.items():
    if "__" in key:
      block, field = key.split("__")
      config[block][field] = value
    else:
      config[key] = value
  return config


def _prepare(d, config):
  """What the main command line does: the one config check, then the workdir."""
  return workdir.prepare(d / "wd", schema.check(config))


def _write_text(d, name, text):
  (d / "in").mkdir(exist_ok=True)
  (d / "in" / name).write_text(text)
  return d / "in" / name


CASES = {
    "x NaN": (_apgd(x=np.array([[0.5, np.nan]] * 2, np.float32)), "apgd: x: expected finite values, found NaN"),
    "x inf": (_apgd(x=np.array([[0.5, np.inf]] * 2, np.float32)), "apgd: x: expected finite values, found inf"),
    "x above 1": (_apgd(x=X + 1.0), "apgd: x: expected values in [0, 1], got range [1.5, 1.5]"),
    "x below 0": (_apgd(x=X - 1.0), "apgd: x: expected values in [0, 1], got range [-0.5, -0.5]"),
    "x integer": (_apgd(x=np.ones((2, 2), np.int32)), "apgd: x: expected float values in [0, 1], got dtype int32"),
    "x not a batch": (_apgd(x=np.full(2, 0.5, np.float32)), "apgd: x: expected a batch [B, ...] with at least 2 axes, got shape (2,)"),
    "y float": (_apgd(y=np.zeros(2, np.float32)), "apgd: y: expected integer class labels, got dtype float32"),
    "y length": (_apgd(y=np.zeros(3, np.int32)), "apgd: y: expected labels of shape [2], got shape (3,)"),
    "eps zero": (_apgd(eps=0.0), "apgd: eps: must be a positive finite number, got 0.0"),
    "eps negative": (_apgd(eps=-0.1), "apgd: eps: must be a positive finite number, got -0.1"),
    "eps 1/0": (_apgd(eps="1/0"), "apgd: eps: division by zero in '1/0'; expected e.g. 1/255"),
    "eps text": (_apgd(eps="abc"), "apgd: eps: expected a positive number such as 0.5 or 1/255, got 'abc'"),
    "eps inf": (_apgd(eps=float("inf")), "apgd: eps: must be a positive finite number, got inf"),
    "eps per sample": (_apgd(eps=np.array([0.1, 0.0])), "apgd: eps: expected positive finite radii, got [0.1, 0.0]"),
    "norm": (lambda d: attacks.pgd(linear, X, Y, key=KEY, eps=0.1, norm="l3"), "norm: expected one of linf, l2, got 'l3'"),
    "attack loss": (_apgd(loss="hinge"), "attack loss: expected one of ce, dlr, dlr-targeted, conf, got 'hinge'"),
    "radii empty": (lambda d: attacks.robust_at_radii(linear, X, Y, key=KEY, radii=[]), "robust_at_radii: radii: expected at least one radius such as 1/255"),
    "radii attack": (lambda d: attacks.robust_at_radii(linear, X, Y, key=KEY, radii=[0.1], attack="cw"), "robust_at_radii: attack: expected one of apgd, autoattack, got 'cw'"),
    "sigma": (lambda d: smoothing.certify(linear, X, key=KEY, sigma=0.0), "sigma: expected a finite number in (0.0, inf), got 0.0"),
    "alpha": (lambda d: smoothing.certify(linear, X, key=KEY, sigma=0.25, alpha=1.5), "alpha: expected a finite number in (0.0, 1.0), got 1.5"),
    "n": (lambda d: smoothing.certify(linear, X, key=KEY, sigma=0.25, n=0), "n: expected an integer >= 1, got 0"),
    "certify x": (lambda d: smoothing.certify_at_radius(linear, X * 3, 0.1, key=KEY, sigma=0.25), "x: expected values in [0, 1]"),
    "certify eps": (lambda d: smoothing.certify_at_radius(linear, X, "0", key=KEY, sigma=0.25), "eps: must be a positive finite number, got '0'"),
    "certified report labels": (lambda d: certified.certify_report(linear, X, Y[:1], d / "r.csv", key=KEY, sigma=0.25), "y: expected labels of shape [2], got shape (1,)"),
    "evaluate radius": (lambda d: empirical.evaluate_model(MLP, X, Y, radii=["0"], key=KEY, report_path=d / "r.csv"), "radius: must be a positive finite number"),
    "evaluate labels": (lambda d: empirical.evaluate_model(MLP, X, np.array([0.0, 1.0]), radii=["0.1"], key=KEY, report_path=d / "r.csv"), "evaluate: y: expected integer class labels"),
    "class count": (lambda d: validation.check_labels(np.array([0, 9]), num_classes=3, name="y"), "y: labels span 0..9 but there are 3 classes (expected 0..2)"),
    "num_classes": (lambda d: validation.check_num_classes(1), "num_classes: expected an integer >= 2, got 1"),
    "report format": (lambda d: reports.read_report(_write_text(d, "r.csv", "a,b\n1,2\n")), "not a per-sample report (first column must be sample_idx)"),
    "report file kind": (lambda d: files.check_file(_write_text(d, "r.csv", "a,b\n"), "report", "--models"), "--models: "),
    "json file": (lambda d: files.check_file(_write_text(d, "r.json", "{"), "json", "--in"), "is not valid JSON"),
    "missing file": (lambda d: files.check_file(d / "nope.csv", "report", "--models"), "--models: no such report file: "),
    "model dir": (lambda d: models.load(d / "nope"), "not a model directory"),
    "empty checkpoint": (lambda d: porting.convert("mlp", _write_text(d, "w.pt", ""), num_classes=3), "checkpoint: "),
    "data set": (lambda d: data.load("nope", "test"), "unknown data set 'nope'"),
    "config arg type": (lambda d: config_args.parse_arg("n=abc", n=3), "config argument n: expected an integer, got 'abc'"),
    "config n_iter": (lambda d: _prepare(d, _config(eval__n_iter=0)), "config.eval.n_iter: expected an integer >= 1, got 0"),
    "config radii": (lambda d: _prepare(d, _config(eval__radii=("0.1", "1/0"))), "config.eval.radii[1]: division by zero in '1/0'"),
    "config norm": (lambda d: _prepare(d, _config(eval__norm="Linf2")), "config.eval.norm: expected one of linf, l2, got 'Linf2'"),
    "config limit": (lambda d: _prepare(d, _config(data__eval_limit=-5)), "config.data.eval_limit: expected an integer >= 0, got -5"),
    "config model dir": (lambda d: _prepare(d, _config(**{"mode": "evaluate"})), "config.model.dir: give the model directory"),
    "config data path": (lambda d: _prepare(d, _config(data__path=str(d / "none.tgz"))), "config.data.path: no such file: "),
    "certified radius for abstention": (lambda d: certified.summarize({"cert_pred": np.array([-1, 0]), "radius": np.array([0.3, 0.5]), "label": np.array([0, 0]), "is_acc": np.array([1, 1])}, 0.25), "report: a radius is reported for an abstention (cert_pred -1); expected 0"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_raises_one_line_and_writes_nothing(tmp_path, name):
  call, message = CASES[name]
  with pytest.raises(UserError) as e:
    call(tmp_path)
  text = str(e.value)
  assert message in text, text
  assert "\n" not in text
  written = [p for p in tmp_path.rglob("*") if "in" not in p.relative_to(tmp_path).parts]
  assert written == [], written


def test_config_with_different_values_is_refused_naming_the_keys(tmp_path):
  _prepare(tmp_path, _config())
  before = (tmp_path / "wd" / "config.json").read_text()
  with pytest.raises(UserError, match=r"different config: eval.n_iter \(5 -> 7\), seed \(0 -> 1\)"):
    config = _config(eval__n_iter=7)
    config.seed = 1
    _prepare(tmp_path, config)
  assert (tmp_path / "wd" / "config.json").read_text() == before


def test_soundness_guards_raise_on_broken_contracts():
  x = np.full((2, 2), 0.5, np.float32)
  with pytest.raises(SoundnessError, match="outside the linf ball: sample 1"):
    soundness.check_attack_result(linear, x, x + np.array([[0.0, 0.0], [0.0, 0.2]], np.float32),
                                   Y, eps=0.1, norm="linf")
  with pytest.raises(SoundnessError, match=r"outside \[0, 1\]"):
    soundness.check_attack_result(linear, x, np.full_like(x, -1e-3), Y,
                                   eps=1.0, norm="l2")
  with pytest.raises(SoundnessError, match="abstention"):
    soundness.check_certificates([-1, 2], [0.1, 0.5])
  # A point claimed non-robust whose prediction does not change is counted robust, with a warning.
  y = np.asarray(jnp.argmax(linear(jnp.asarray(x)), -1))
  with pytest.warns(UserWarning, match="1 point\\(s\\) claimed non-robust keep their prediction"):
    robust = soundness.check_attack_result(linear, x, x, y, eps=0.1, norm="linf",
                                            claimed_robust=[True, False])
  np.testing.assert_array_equal(robust, [True, True])


def test_workdir_records_versions_and_the_commit(tmp_path):
  import flax  # pylint: disable=import-outside-toplevel
  import jax_abstain  # pylint: disable=import-outside-toplevel
  _prepare(tmp_path, _config())
  env = files.read_json(tmp_path / "wd" / "environment.json")
  assert env["jax"] == jax.__version__ and env["flax"] == flax.__version__
  assert env["jax_abstain"] == jax_abstain.__version__
  assert len(env["git_commit"]) == 40 and isinstance(env["git_dirty"], bool)
