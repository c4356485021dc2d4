"""Training: resume gives the same parameters, divergence stops with a clear message."""
import chex
import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jax_abstain import data, models, train
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
