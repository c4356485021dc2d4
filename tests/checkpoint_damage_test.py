"""Issue 16, item 8: a damaged newest checkpoint. The damages are made on the checkpoints of a
real small training run: a truncated or garbled ``_METADATA``, an empty step folder, missing
array files, a truncated OCDBT manifest, a missing ``state/`` item, a damaged data-iterator
state, a truncated ``_CHECKPOINT_METADATA``, a leftover ``*.orbax-checkpoint-tmp`` folder.
Right: the damaged step is named with what is wrong, the run resumes from the newest intact
step with a warning (and ends with the parameters of the uninterrupted run), and a step asked
for by number is refused with the exact reason."""
import json
import logging
import shutil

import jax
import numpy as np
import pytest
from flax import nnx, traverse_util

from jax_abstain import data, models
from jax_abstain.errors import UserError
from jax_abstain.training import checkpointing, loop, step as step_lib
from jax_abstain.training.config import TrainConfig

# 400 training rows in batches of 50: 8 steps per epoch, 16 in all; checkpoints every 4 steps,
# the last 3 kept (8, 12, 16); validation after each epoch (steps 8 and 16).
CFG = dict(loss="std", epochs=2, batch_size=50, lr=0.03, checkpoint_every=4, keep_checkpoints=3,
           log_every=100, select_every=1, select_steps=2)


def _train(workdir):
  x, y = data.load("synthetic", "train")
  model = models.create("mlp", num_classes=3, seed=0)
  out = loop.train(model, x[100:500], y[100:500], CFG, workdir=workdir, name="m", progress=False,
                   validation=(x[:100], y[:100]))
  params = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return out, {k: np.asarray(v) for k, v in params.items()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("finished")
  out, params = _train(workdir)
  assert sorted(p.name for p in (workdir / "checkpoints" / "m").iterdir()) == ["12", "16", "8"]
  return workdir, out, params


def _initial(num_classes=3):
  model = models.create("mlp", num_classes=num_classes, seed=0)
  tx = step_lib.make_optimizer(TrainConfig.from_config(CFG), 8)
  _, params, rest = nnx.split(model, nnx.Param, ...)
  return {"params": nnx.to_pure_dict(params), "rest": nnx.to_pure_dict(rest),
          "opt": tx.init(nnx.to_pure_dict(params)),
          "rng": np.asarray(jax.random.key_data(jax.random.key(0))),
          "best": np.asarray(np.nan, np.float32), "best_step": np.asarray(-1, np.int32)}


def _truncate(path, keep=100):
  path.write_bytes(path.read_bytes()[:keep])


DAMAGES = {
    "truncated state/_METADATA": (
        lambda s: _truncate(s / "state" / "_METADATA"), "state/_METADATA is truncated or garbled"),
    "garbled state/_METADATA": (
        lambda s: (s / "state" / "_METADATA").write_text('{"tree_metadata": {}} trailing'),
        "state/_METADATA is truncated or garbled"),
    "empty state/_METADATA": (
        lambda s: (s / "state" / "_METADATA").write_bytes(b""), "state/_METADATA is empty"),
    "empty step folder": (
        lambda s: (shutil.rmtree(s), s.mkdir()), "the step folder is empty"),
    "missing array files": (
        lambda s: [f.unlink() for f in (s / "state").glob("ocdbt.process_*/d/*")],
        "its arrays cannot be read"),
    "truncated OCDBT manifest": (
        lambda s: _truncate(s / "state" / "manifest.ocdbt", 20), "its arrays cannot be read"),
    "missing state item": (
        lambda s: shutil.rmtree(s / "state"), "its state/ item is missing"),
    "truncated data-iterator state": (
        lambda s: _truncate(s / "data" / "process_0-of-1.json", 50),
        "data/process_0-of-1.json is truncated or garbled"),
    "missing data-iterator state": (
        lambda s: (s / "data" / "process_0-of-1.json").unlink(),
        "its data/ item holds no data iterator state"),
    "truncated _CHECKPOINT_METADATA": (
        lambda s: _truncate(s / "_CHECKPOINT_METADATA", 30),
        "_CHECKPOINT_METADATA is truncated or garbled"),
}


def _copy(finished, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished[0], workdir)
  return workdir, workdir / "checkpoints" / "m"


def _leaves(tree):
  return [np.asarray(v) for v in jax.tree.leaves(tree)]


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_damaged_newest_step_resumes_from_the_newest_intact_step(finished, tmp_path, caplog,
                                                                  kind):
  _, folder = _copy(finished, tmp_path)
  damage, phrase = DAMAGES[kind]
  damage(folder / "16")
  ckpt = checkpointing.Checkpointer(folder, keep=3)
  try:
    with caplog.at_level(logging.WARNING):
      state, step = ckpt.restore_or(_initial())
    assert step == 12
    warning = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warning) == 1 and "checkpoint step 16" in warning[0] and phrase in warning[0]
    assert "resuming from step 12" in warning[0]
    assert sorted(p.name for p in folder.iterdir()) == ["12", "16.damaged", "8"]
    # The state is step 12's, as an untouched copy restores it, with its data iterator state.
    intact = checkpointing.Checkpointer(finished[0] / "checkpoints" / "m", keep=3)
    expected, _ = intact.restore_or(_initial(), step=12)
    for got, want in zip(_leaves(state), _leaves(expected)):
      np.testing.assert_array_equal(got, want)
    assert json.loads(ckpt.data_state(12)) == json.loads(intact.data_state(12))
    intact.close()
    ckpt.save(16, state, data_state=ckpt.data_state(12), wait=True)   # step 16 can be saved again
    assert ckpt.latest_step() == 16
  finally:
    ckpt.close()


def test_leftover_unfinished_save_is_removed_and_ignored(finished, tmp_path, caplog):
  _, folder = _copy(finished, tmp_path)
  shutil.copytree(folder / "16", folder / "20.orbax-checkpoint-tmp-1795976299")
  ckpt = checkpointing.Checkpointer(folder, keep=3)
  with caplog.at_level(logging.WARNING):
    _, step = ckpt.restore_or(_initial())
  ckpt.close()
  assert step == 16
  assert "removing 20.orbax-checkpoint-tmp-1795976299, an unfinished save" in caplog.text
  assert sorted(p.name for p in folder.iterdir()) == ["12", "16", "8"]


def test_a_step_asked_for_is_refused_with_the_exact_reason(finished, tmp_path):
  _, folder = _copy(finished, tmp_path)
  _truncate(folder / "16" / "state" / "_METADATA")
  ckpt = checkpointing.Checkpointer(folder, keep=3)
  with pytest.raises(UserError, match=r"^checkpoint step 16 in .* is damaged: state/_METADATA is "
                     r"truncated or garbled \(JSONDecodeError") as e:
    ckpt.restore_or(_initial(), step=16)
  assert "does not match" not in str(e.value)
  [f.unlink() for f in (folder / "12" / "state").glob("ocdbt.process_*/d/*")]
  with pytest.raises(UserError, match=r"step 12 .* is damaged: its arrays cannot be read"):
    ckpt.restore_or(_initial(), step=12)
  ckpt.close()
  assert sorted(p.name for p in folder.iterdir()) == ["12", "16", "8"]     # nothing set aside


def test_another_model_is_a_mismatch_not_damage(finished, tmp_path):
  _, folder = _copy(finished, tmp_path)
  ckpt = checkpointing.Checkpointer(folder, keep=3)
  with pytest.raises(UserError, match=r"m/16 does not match this model/config \(ValueError: "
                     r"Requested shape: \((64, 4|4,)\) is not compatible"):
    ckpt.restore_or(_initial(num_classes=4))
  ckpt.close()
  assert sorted(p.name for p in folder.iterdir()) == ["12", "16", "8"]


def test_every_step_damaged_starts_over(finished, tmp_path, caplog):
  _, folder = _copy(finished, tmp_path)
  for s in ("8", "12", "16"):
    _truncate(folder / s / "state" / "_METADATA")
  ckpt = checkpointing.Checkpointer(folder, keep=3)
  initial = _initial()
  with caplog.at_level(logging.WARNING):
    state, step = ckpt.restore_or(initial)
  ckpt.close()
  assert step == 0 and state is initial
  assert caplog.text.count("starting from step 0") == 3
  assert sorted(p.name for p in folder.iterdir()) == ["12.damaged", "16.damaged", "8.damaged"]


def test_training_resumes_past_a_damaged_newest_step_to_the_same_parameters(finished, tmp_path):
  # The whole loop: step 16 (the last) has a truncated _METADATA; the run resumes from 12 and
  # ends with the uninterrupted run's parameters and selection.
  workdir, folder = _copy(finished, tmp_path)
  _truncate(folder / "16" / "state" / "_METADATA")
  out, params = _train(workdir)
  assert out["resumed_from"] == 12 and out["best"] == finished[1]["best"]
  assert params.keys() == finished[2].keys()
  for k, v in params.items():
    np.testing.assert_array_equal(v, finished[2][k], err_msg=str(k))


def test_damaged_selected_model_is_selected_again(finished, tmp_path, caplog):
  # The selected model's own checkpoint (under m_best) is damaged: the run goes back to a step
  # before the selection, selects and saves it again, and returns the same model.
  workdir, _ = _copy(finished, tmp_path)
  best = finished[1]["best"]["step"]
  best_dir = workdir / "checkpoints" / "m_best" / str(best)
  shutil.rmtree(best_dir)
  best_dir.mkdir()
  with caplog.at_level(logging.WARNING):
    out, params = _train(workdir)
  assert f"the checkpoint of the selected step {best} is damaged or missing" in caplog.text
  assert out["resumed_from"] < best and out["best"] == finished[1]["best"]
  for k, v in params.items():
    np.testing.assert_array_equal(v, finished[2][k], err_msg=str(k))


def test_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path, caplog):
  from jax_abstain.training import writer
  path = tmp_path / "metrics_m.jsonl"
  path.write_text('{"model": "m", "kind": "train", "step": 4, "loss": 1.0}\n'
                  '{"model": "m", "kind": "train", "step": 8, "loss": 0.5}\n'
                  '{"model": "m", "kind": "train", "step": 12, "lo')
  with caplog.at_level(logging.WARNING):
    w = writer.MetricWriter(tmp_path, "m", resume_step=8)
  w.close()
  assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [4, 8]
  assert "dropping a damaged line" in caplog.text
