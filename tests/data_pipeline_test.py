"""Tests for pipeline.py: batch contents, same seed -> same batches, per-epoch reshuffles,
per-host shards disjoint and complete, resuming an iterator from its saved state, and grain
worker processes (a subprocess: they need a __main__ guard and parsed absl flags)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from jax_abstain import data
from jax_abstain.data import pipeline
from jax_abstain.errors import UserError


def _images(n=40, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, 8, 8, 3)).astype(np.float32)
  y = np.repeat(np.arange(4), n // 4).astype(np.int32)   # class-sorted, like mnist5k
  return x, y


def _take(iterator, k):
  return [next(iterator) for _ in range(k)]


def _same(batches_a, batches_b):
  for a, b in zip(batches_a, batches_b, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_batches_have_the_contract_shapes():
  x, y = _images()
  batch = next(iter(pipeline.train_loader(x, y, batch_size=8, seed=0, augment="crop_flip",
                                          shard=(0, 1))))
  assert batch["image"].shape == (8, 8, 8, 3) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int64
  assert 0 <= batch["image"].min() and batch["image"].max() <= 1
  np.testing.assert_array_equal(batch["label"], y[batch["index"]])
  u8 = next(iter(pipeline.eval_loader((x * 255).astype(np.uint8), y, batch_size=4)))
  np.testing.assert_allclose(u8["image"], np.round(x[:4] * 255) // 1 / 255, atol=1 / 255)


def test_same_seed_same_batches_and_epochs_reshuffle():
  x, y = _images()
  make = lambda seed: iter(pipeline.train_loader(x, y, batch_size=10, seed=seed,
                                                 augment="stdaug", shard=(0, 1)))
  a, b, c = _take(make(1), 8), _take(make(1), 8), _take(make(2), 8)
  _same(a, b)
  assert not np.array_equal(a[0]["index"], c[0]["index"])
  epoch1 = np.concatenate([t["index"] for t in a[:4]])
  epoch2 = np.concatenate([t["index"] for t in a[4:]])
  assert sorted(epoch1) == list(range(40)) == sorted(epoch2)
  assert not np.array_equal(epoch1, epoch2)
  # A record seen in both epochs gets new augmentation draws.
  first = {i: img for t in a[:4] for i, img in zip(t["index"], t["image"])}
  second = {i: img for t in a[4:] for i, img in zip(t["index"], t["image"])}
  assert not np.array_equal(first[0], second[0])


@pytest.mark.parametrize("n,count", [(40, 4), (37, 3)])
def test_shards_are_disjoint_and_complete(n, count):
  x, y = _images(40)
  x, y = x[:n], y[:n]
  seen = []
  for k in range(count):
    loader = pipeline.make_loader(x, y, batch_size=5, seed=3, num_epochs=1, shard=(k, count),
                                  drop_remainder=False)
    idx = np.concatenate([b["index"] for b in loader])
    assert len(np.unique(y[idx])) > 1   # the global permutation mixes class-sorted data
    seen.append(set(idx.tolist()))
    assert len(idx) == len(seen[-1]) and abs(len(idx) - n / count) < 1
  assert sum(len(s) for s in seen) == n and set.union(*seen) == set(range(n))
  evaluated = [np.concatenate([b["index"] for b in pipeline.eval_loader(x, y, batch_size=4,
                                                                         shard=(k, count))])
               for k in range(count)]
  np.testing.assert_array_equal(np.concatenate(evaluated), np.arange(n))


def test_default_shard_is_the_jax_process():
  x, y = _images()
  idx = np.concatenate([b["index"] for b in pipeline.eval_loader(x, y, batch_size=16)])
  np.testing.assert_array_equal(idx, np.arange(40))   # one process: one shard, everything


def test_resume_gives_identical_following_batches():
  x, y = _images()
  make = lambda: pipeline.train_loader(x, y, batch_size=6, seed=5, augment="crop_flip",
                                       shard=(1, 2))
  iterator = iter(make())
  _take(iterator, 5)                # crosses an epoch boundary (20 rows per shard)
  state = pipeline.get_state(iterator)
  assert isinstance(state, str)
  expected = _take(iterator, 6)
  _same(_take(pipeline.restore(make(), state), 6), expected)
  with pytest.raises(UserError, match="does not fit"):
    pipeline.restore(pipeline.train_loader(x, y, batch_size=6, seed=6, shard=(1, 2)), state)
  with pytest.raises(UserError, match="does not fit"):
    pipeline.restore(pipeline.train_loader(x[::-1].copy(), y, batch_size=6, seed=5,
                                           augment="crop_flip", shard=(1, 2)), state)


def test_real_set_through_the_pipeline():
  x, y = data.load("digits", "train")
  loader = pipeline.train_loader(x, y, batch_size=32, seed=0, augment="crop_rotate",
                                 shard=(0, 1))
  batch = next(iter(loader))
  assert batch["image"].shape == (32, 8, 8, 1) and set(batch["label"]) <= set(range(10))
  assert pipeline.steps_per_epoch(len(x), 32, 2) == len(x) // 2 // 32


def test_bad_arguments():
  x, y = _images()
  with pytest.raises(UserError, match="shard"):
    pipeline.train_loader(x, y, batch_size=4, shard=(2, 2))
  with pytest.raises(UserError, match="rows"):
    pipeline.train_loader(x, y[:3], batch_size=4)
  with pytest.raises(UserError, match="needs images"):
    pipeline.train_loader(x.reshape(40, -1), y, batch_size=4, augment="crop_flip")
  with pytest.raises(UserError, match="batch_size"):
    pipeline.eval_loader(x, y, batch_size=0)


_WORKER_SCRIPT = """
import numpy as np
from absl import app

def main(argv):
  from jax_abstain.data import pipeline
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(60, 8, 8, 3)).astype(np.float32)
  y = rng.integers(0, 10, 60).astype(np.int32)
  images = {}
  for workers in (0, 2):
    make = lambda: pipeline.train_loader(x, y, batch_size=5, seed=0, augment="stdaug",
                                         shard=(0, 1), worker_count=workers)
    it = iter(make())
    batches = [next(it) for _ in range(6)]
    images[workers] = {int(i): im for b in batches for i, im in zip(b["index"], b["image"])}
    state = pipeline.get_state(it)
    after = [next(it)["index"].tolist() for _ in range(3)]
    resumed = pipeline.restore(make(), state)
    assert [next(resumed)["index"].tolist() for _ in range(3)] == after, workers
  common = set(images[0]) & set(images[2])
  assert len(common) >= 10 and all(np.array_equal(images[0][i], images[2][i]) for i in common)
  print("ok")

if __name__ == "__main__":
  app.run(main)
"""


def test_worker_processes_same_records_and_resume(tmp_path):
  script = tmp_path / "workers.py"
  script.write_text(_WORKER_SCRIPT)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=300)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
