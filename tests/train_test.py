"""Training: resume gives the same parameters, divergence stops with a clear message."""
import chex
import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jax_abstain import data, models
from jax_abstain.jobs import train
from jax_abstain.errors import UserError

X, Y = data.load("synthetic", "train")
X, Y = X[::4], Y[::4]


def _cfg(**kw):
  base = dict(loss="era", beta=0.2, trades_beta=6.0, eps="0.1", norm="linf", variant="paper",
              epochs=2, batch_size=10, lr=0.03, momentum=0.9, weight_decay=1e-4,
              schedule="constant", attack_steps=3, attack_rel_step=0.25, bn_mode_attack="",
              bn_mode_loss="")
  return ml_collections.ConfigDict({**base, **kw})


def test_resumed_training_matches_uninterrupted(tmp_path):
  straight = models.create("mlp", num_classes=3, seed=0)
  train.fit(straight, X, Y, _cfg(epochs=2), workdir=tmp_path / "a", name="m", progress=False)
  resumed = models.create("mlp", num_classes=3, seed=0)
  train.fit(resumed, X, Y, _cfg(epochs=1), workdir=tmp_path / "b", name="m", progress=False)
  again = models.create("mlp", num_classes=3, seed=0)     # a fresh process would start here
  train.fit(again, X, Y, _cfg(epochs=2), workdir=tmp_path / "b", name="m", progress=False)
  chex.assert_trees_all_close(nnx.state(straight, nnx.Param), nnx.state(again, nnx.Param), atol=1e-6)
  assert (tmp_path / "b" / "metrics_m.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize("loss", ["std", "trades", "era", "dga", "mart", "noise", "cra"])
@pytest.mark.parametrize("variant", ["paper", "code"])
def test_every_loss_trains_and_lowers_loss(tmp_path, loss, variant):
  model = models.create("mlp", num_classes=3, seed=1)
  train.fit(model, X, Y, _cfg(loss=loss, variant=variant, epochs=2), workdir=tmp_path, name=loss,
            progress=False)
  lines = (tmp_path / f"metrics_{loss}.jsonl").read_text().splitlines()
  import json
  first, last = (json.loads(l) for l in (lines[0], lines[-1]))
  assert np.isfinite(last["loss"]) and last["loss"] < first["loss"] * 1.05


def test_divergence_is_reported(tmp_path):
  model = models.create("mlp", num_classes=3, seed=0)
  with pytest.raises(FloatingPointError, match="diverged"):
    train.fit(model, X, Y, _cfg(loss="std", lr=1e30, epochs=1), workdir=tmp_path, name="m",
              progress=False)


def test_bad_training_config(tmp_path):
  model = models.create("mlp", num_classes=3, seed=0)
  with pytest.raises(UserError, match="train.loss"):
    train.fit(model, X, Y, _cfg(loss="nope"), workdir=tmp_path, name="m", progress=False)
  with pytest.raises(UserError, match="exceeds"):
    train.fit(model, X, Y, _cfg(batch_size=10_000), workdir=tmp_path, name="m", progress=False)


@pytest.mark.parametrize("loss,stats_move", [("std", True), ("trades", True), ("era", False)])
def test_batch_norm_model_trains_with_the_configured_bn_mode(tmp_path, loss, stats_move):
  """A WRN with BatchNorm trains for several steps; train-mode losses update the running
  statistics, ERA (eval mode, as the authors freeze them) leaves them unchanged."""
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(32, 32, 32, 3)).astype(np.float32)
  y = (np.arange(32) % 10).astype(np.int32)
  model = models.create("wrn-10-1", num_classes=10, seed=0)
  before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat).to_pure_dict())
  train.fit(model, x, y, _cfg(loss=loss, eps="2/255", batch_size=16, epochs=1, attack_steps=2),
            workdir=tmp_path, name=loss, progress=False)
  after = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat).to_pure_dict())
  moved = any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
  assert moved == stats_move
  assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_lr_drops_tenfold_from_75_percent_of_the_epochs():
  # The authors' TradesLR: x0.1 for 0-based epochs >= 0.75 * epochs (38-49 of 50).
  assert train.lr_boundaries("trades", 50, 250) == {38 * 250: 0.1}
  assert train.lr_boundaries("trades", 20, 100) == {15 * 100: 0.1}
  assert train.lr_boundaries("trades_scratch", 100, 10) == {750: 0.1, 900: 0.1}
  assert train.lr_boundaries("constant", 50, 10) == {}
  schedule_cfg = _cfg(schedule="trades", epochs=4, lr=0.1, momentum=0.0, weight_decay=0.0)
  tx = train.make_optimizer(schedule_cfg, 2)
  params = {"w": np.ones(1, np.float32)}
  state, lrs = tx.init(params), []
  for _ in range(8):
    updates, state = tx.update({"w": np.ones(1, np.float32)}, state, params)
    lrs.append(-float(updates["w"][0]))
  np.testing.assert_allclose(lrs, [0.1] * 6 + [0.01] * 2, rtol=1e-6)


def test_metrics_go_to_jsonl_and_tensorboard(tmp_path):
  model = models.create("mlp", num_classes=3, seed=0)
  cfg = _cfg(loss="std", epochs=2, log_every=5, checkpoint_every=10, select_every=1,
             select_steps=2)
  train.fit(model, X[50:], Y[50:], cfg, workdir=tmp_path, name="m", progress=False,
            validation=(X[:50], Y[:50]))
  import json
  records = [json.loads(l) for l in (tmp_path / "metrics_m.jsonl").read_text().splitlines()]
  train_steps = [r["step"] for r in records if r["kind"] == "train"]
  assert train_steps == list(range(5, 41, 5))        # 200 rows / batch 10 = 20 steps an epoch
  val = [r for r in records if r["kind"] == "val"]
  assert [r["step"] for r in val] == [20, 40]
  assert all(0 <= r["rob_inacc"] <= 100 and r["nat_acc"] >= r["rob_acc"] for r in val)
  assert {"loss", "acc", "grad_norm", "steps_per_s", "epoch"} <= set(records[0])
  assert list((tmp_path / "tensorboard" / "m").glob("events.out.tfevents.*"))
  assert sorted(p.name for p in (tmp_path / "checkpoints" / "m").iterdir()) == ["10", "20", "30", "40"][-3:]
  assert [p.name for p in (tmp_path / "checkpoints" / "m_best").iterdir()] in (["20"], ["40"])


def test_preflight_rejects_bad_jobs_before_loading_anything(tmp_path):
  from jax_abstain.configs import mnist5k
  def config(**train_changes):
    c = mnist5k.get_config()
    c.train.update(train_changes)
    return c
  train.preflight(config())
  for changes, message in [(dict(loss="nope"), "train.loss"), (dict(schedule="x"), "train.schedule"),
                           (dict(bn_mode_loss="frozen"), "train.bn_mode_loss"),
                           (dict(batch_size=0), "train.batch_size")]:
    with pytest.raises(UserError, match=message):
      train.preflight(config(**changes))
  c = config()
  c.model.name = "resnet-9000"
  with pytest.raises(UserError, match="unknown model"):
    train.preflight(c)
  c = config()
  c.model.init_dir = str(tmp_path / "missing")
  with pytest.raises(UserError, match="config.model.init_dir"):
    train.preflight(c)
  c = config()
  c.train.selection_split = "val"
  with pytest.raises(UserError, match="selection_split"):
    train.preflight(c)


def test_beta_decay_of_the_authors_cra_script():
  # 0.75 -> 0.075 -> 0.0075 at epochs 20 and 40 (reference section 2); constant by default.
  cfg = _cfg(beta=0.75, beta_decay_every=20)
  scales = [train.beta_scale(cfg, e) for e in (0, 19, 20, 39, 40, 49)]
  np.testing.assert_allclose(np.multiply(0.75, scales), [0.75, 0.75, 0.075, 0.075, 0.0075, 0.0075])
  assert train.beta_scale(_cfg(), 49) == 1.0
