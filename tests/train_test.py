"""Training: resume gives the same parameters, divergence stops with a clear message, every
objective trains, schedules and the batch check behave as documented."""
import json

import chex
import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jax_abstain import data, models, training
from jax_abstain.errors import UserError
from jax_abstain.training import config as config_lib, loop, objectives, step

X, Y = data.load("synthetic", "train")
X, Y = X[::4], Y[::4]


def _cfg(**kw):
  base = dict(loss="era", beta=0.2, trades_beta=6.0, eps="0.1", norm="linf", variant="paper",
              epochs=2, batch_size=10, lr=0.03, momentum=0.9, weight_decay=1e-4,
              schedule="constant", attack_steps=3, attack_rel_step=0.25, bn_mode_attack="",
              bn_mode_loss="")
  return ml_collections.ConfigDict({**base, **kw})   # a ConfigDict, as the jobs pass it


def test_resumed_training_matches_uninterrupted(tmp_path):
  straight = models.create("mlp", num_classes=3, seed=0)
  training.fit(straight, X, Y, _cfg(epochs=2), workdir=tmp_path / "a", name="m", progress=False)
  resumed = models.create("mlp", num_classes=3, seed=0)
  training.fit(resumed, X, Y, _cfg(epochs=1), workdir=tmp_path / "b", name="m", progress=False)
  again = models.create("mlp", num_classes=3, seed=0)     # a fresh process would start here
  training.fit(again, X, Y, _cfg(epochs=2), workdir=tmp_path / "b", name="m", progress=False)
  chex.assert_trees_all_close(nnx.state(straight, nnx.Param), nnx.state(again, nnx.Param), atol=1e-6)
  assert (tmp_path / "b" / "metrics_m.jsonl").read_text().count("\n") == 2


# The variant changes only ERA, DGA and CRA (docs/design.md, appendix A1-A2); the other
# losses are trained once.
@pytest.mark.parametrize("loss,variant", [
    ("std", "paper"), ("trades", "paper"), ("mart", "paper"), ("noise", "paper"),
    ("era", "paper"), ("era", "code"), ("dga", "paper"), ("dga", "code"), ("cra", "paper"),
    ("cra", "code"), ("ibp", "paper"), ("mma", "paper")])
def test_every_loss_trains_and_lowers_loss(tmp_path, loss, variant):
  # The mean training loss of the second epoch is at least 10% (of its size) below the
  # first's; catches an objective whose gradient does not reach the parameters or points
  # the wrong way (the CRA loss of the paper variant is negative, hence the absolute value).
  model = models.create("mlp", num_classes=3, seed=1)
  training.fit(model, X, Y, _cfg(loss=loss, variant=variant, epochs=2), workdir=tmp_path, name=loss,
            progress=False)
  lines = (tmp_path / f"metrics_{loss}.jsonl").read_text().splitlines()
  assert len(lines) == 2                       # one line per epoch (log_every 0)
  first, last = (json.loads(l)["loss"] for l in lines)
  assert np.isfinite(last) and last < first - 0.1 * abs(first), (first, last)


def test_the_noise_objective_forwards_one_copy_per_input_by_default():
  # The authors' L_noise draws one Gaussian copy per input, their CRA 16 (appendix A2): the
  # loss's only forward sees 4 or 64 rows for a batch of 4.
  rows = []

  class Recording(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jax.numpy.ones((2, 3)))

    def __call__(self, x):
      rows.append(x.shape[0])
      return x @ self.w[...]

  x, y = np.full((4, 2), 0.5, np.float32), np.zeros(4, np.int32)
  for loss, draws in (("noise", 1), ("cra", 16)):
    rows.clear()
    graphdef, params, rest = nnx.split(Recording(), nnx.Param, ...)
    step.make_loss_fn(graphdef, config_lib.TrainConfig(loss=loss, sigma=0.1))(
        nnx.to_pure_dict(params), nnx.to_pure_dict(rest), x, y, jax.random.key(0))
    assert rows == [4 * draws], (loss, rows)


def test_divergence_is_reported(tmp_path):
  model = models.create("mlp", num_classes=3, seed=0)
  with pytest.raises(FloatingPointError, match="diverged"):
    training.fit(model, X, Y, _cfg(loss="std", lr=1e30, epochs=1), workdir=tmp_path, name="m",
              progress=False)


def test_bad_training_config(tmp_path):
  model = models.create("mlp", num_classes=3, seed=0)
  with pytest.raises(UserError, match="train.loss"):
    training.fit(model, X, Y, _cfg(loss="nope"), workdir=tmp_path, name="m", progress=False)
  with pytest.raises(UserError, match="exceeds"):
    training.fit(model, X, Y, _cfg(batch_size=10_000), workdir=tmp_path, name="m", progress=False)
  assert not (tmp_path / "checkpoints").exists()        # refused before anything was written


def test_batch_size_check_is_one_function():
  # 2 devices: 10 splits, 3 does not (the message names the field and the device count).
  loop.check_batch_size(10, 2)
  with pytest.raises(UserError, match=r"^train\.batch_size: 3 must be a positive multiple of "
                     r"the 2 devices \(1 processes\)$"):
    loop.check_batch_size(3, 2)
  with pytest.raises(UserError, match=r"^config\.train\.batch_size: 0 "):
    loop.check_batch_size(0, name="config.train.batch_size")
  p = loop.plan(config_lib.TrainConfig(batch_size=10, epochs=3, log_every=4), 205)
  assert (p.steps_per_epoch, p.total, p.log_every, p.checkpoint_every) == (20, 60, 4, 20)


@pytest.mark.parametrize("loss,stats_move", [("std", True), ("trades", True), ("era", False)])
def test_batch_norm_model_trains_with_the_configured_bn_mode(tmp_path, loss, stats_move):
  """A WRN with BatchNorm trains for several steps; train-mode losses update the running
  statistics, ERA (eval mode, as the authors freeze them) leaves them unchanged."""
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(32, 32, 32, 3)).astype(np.float32)
  y = (np.arange(32) % 10).astype(np.int32)
  model = models.create("wrn-10-1", num_classes=10, seed=0)
  before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
  training.fit(model, x, y, _cfg(loss=loss, eps="2/255", batch_size=16, epochs=1, attack_steps=2),
            workdir=tmp_path, name=loss, progress=False)
  after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
  moved = any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
  assert moved == stats_move
  assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_lr_drops_tenfold_from_75_percent_of_the_epochs():
  # The authors' TradesLR: x0.1 for 0-based epochs >= 0.75 * epochs (38-49 of 50).
  assert step.lr_boundaries("trades", 50, 250) == {38 * 250: 0.1}
  assert step.lr_boundaries("trades", 20, 100) == {15 * 100: 0.1}
  assert step.lr_boundaries("trades_scratch", 100, 10) == {750: 0.1, 900: 0.1}
  assert step.lr_boundaries("constant", 50, 10) == {}
  schedule_cfg = _cfg(schedule="trades", epochs=4, lr=0.1, momentum=0.0, weight_decay=0.0)
  tx = step.make_optimizer(config_lib.TrainConfig.from_config(schedule_cfg), 2)
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
  training.fit(model, X[50:], Y[50:], cfg, workdir=tmp_path, name="m", progress=False,
               validation=(X[:50], Y[:50]))
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


def test_beta_decay_of_the_authors_cra_script():
  # 0.75 -> 0.075 -> 0.0075 at epochs 20 and 40 (docs/design.md, appendix A2); constant by default.
  cfg = config_lib.TrainConfig(beta=0.75, beta_decay_every=20)
  scales = [step.beta_scale(cfg, e) for e in (0, 19, 20, 39, 40, 49)]
  np.testing.assert_allclose(np.multiply(0.75, scales), [0.75, 0.75, 0.075, 0.075, 0.0075, 0.0075])
  assert step.beta_scale(config_lib.TrainConfig(), 49) == 1.0


def test_every_loss_name_has_one_objective():
  # Catches a loss accepted by TrainConfig with no objective (a KeyError at the first step).
  assert tuple(objectives.OBJECTIVES) == config_lib.LOSSES


class _Linear(nnx.Module):
  def __init__(self):
    self.w = nnx.Param(jax.numpy.asarray([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))

  def __call__(self, x):
    return x @ self.w[...]


def _numpy_ce(x, w, y):
  logits = x @ w
  logits = logits - logits.max(1, keepdims=True)
  return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(y)), y]))


@pytest.mark.parametrize("loss", ["std", "noise"])
def test_clean_objectives_equal_cross_entropy_by_hand(loss):
  # std is CE(f(x), y); noise with sigma 1e-7 is the same CE (the copies equal x). The
  # reference is numpy's log-sum-exp, independent of losses.py; the gradient of the mean CE
  # of a linear model is x^T (softmax - onehot) / B.
  x = np.asarray([[0.2, 0.9], [0.7, 0.1], [0.5, 0.5], [0.0, 1.0]], np.float32)
  y = np.asarray([1, 0, 2, 1], np.int32)
  model = _Linear()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  cfg = config_lib.TrainConfig(loss=loss, sigma=1e-7, num_noise=3, beta=0.0)
  (value, (metrics, _)), grads = jax.value_and_grad(step.make_loss_fn(graphdef, cfg), has_aux=True)(
      nnx.to_pure_dict(params), nnx.to_pure_dict(rest), x, y, jax.random.key(0))
  w = np.asarray(model.w[...], np.float64)
  np.testing.assert_allclose(float(value), _numpy_ce(x, w, y), rtol=1e-5)
  p = np.exp(x @ w) / np.exp(x @ w).sum(1, keepdims=True)
  expected_grad = x.T @ (p - np.eye(3)[y]) / len(y)
  np.testing.assert_allclose(np.asarray(grads["w"]), expected_grad, atol=1e-5)
  # accuracy by hand: logits rows argmax -> [1, 0, 1, 1] vs labels [1, 0, 2, 1]
  assert float(metrics["acc"]) == 0.75


def test_forward_is_public_and_respects_the_bn_mode():
  # Catches selection reaching into a private helper, and a forward that ignores its mode:
  # eval mode returns the running statistics unchanged, train mode moves them.
  model = models.create("wrn-10-1", num_classes=10, seed=0)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
  before = nnx.to_pure_dict(rest)
  _, after_eval = step.forward(graphdef, nnx.to_pure_dict(params), before, x, "eval")
  _, after_train = step.forward(graphdef, nnx.to_pure_dict(params), before, x, "train")
  same = lambda a, b: all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert same(before, after_eval) and not same(before, after_train)
