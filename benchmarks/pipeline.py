"""Input pipeline (grain, AutoAugment) throughput vs what an ERA training step consumes."""
import time

import jax
import numpy as np
import optax
from flax import nnx

from benchmarks import timing
from jax_abstain import models
from jax_abstain.training import step as step_lib
from jax_abstain.data import pipeline

BATCH = 128


def loader_rate(x, y, workers, batches):
  it = iter(pipeline.train_loader(x, y, batch_size=BATCH, seed=0, augment="autoaugment",
                                  worker_count=workers))
  next(it)  # start-up (and worker spawn) not timed
  next(it)
  t = time.perf_counter()
  for _ in range(batches):
    b = next(it)
  dt = time.perf_counter() - t
  assert b["image"].shape == (BATCH, 32, 32, 3)
  return BATCH * batches / dt


def step_rate(arch, loss, batch, steps, size=32, **kw):
  model = models.create(arch, **kw)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)   # as training.fit passes them
  cfg = dict(loss=loss, beta=0.2, trades_beta=6.0, eps="8/255", norm="linf",
             variant="paper", attack_steps=10, attack_rel_step=0.25, bn_mode_attack="",
             bn_mode_loss="")
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(params)
  step = step_lib.make_train_step(graphdef, cfg, tx)
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
  y = rng.integers(0, 10, batch).astype(np.int32)
  params, rest, opt_state, m = step(params, rest, opt_state, x, y, jax.random.key(0))  # compile
  jax.block_until_ready(m)
  times = []
  for i in range(steps):
    t = time.perf_counter()
    params, rest, opt_state, m = step(params, rest, opt_state, x, y, jax.random.key(i + 1))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return batch / min(times), min(times)


def run(quick: bool, peak: float) -> str:  # pylint: disable=unused-argument
  rng = np.random.default_rng(0)
  n = 4096
  x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  y = rng.integers(0, 10, n).astype(np.int64)
  batches = 10 if quick else 30
  rows = []
  for workers in (0, 2):
    try:
      rate = loader_rate(x, y, workers, batches)
      rows.append([f"`train_loader` autoaugment, worker_count={workers}", BATCH, f"{rate:,.0f}"])
    except Exception as e:  # pylint: disable=broad-except
      rows.append([f"`train_loader` autoaugment, worker_count={workers}", BATCH,
                   f"failed: {type(e).__name__}: {str(e)[:120]}"])
  loader0 = float(rows[0][2].replace(",", "")) if not rows[0][2].startswith("failed") else None
  steps = 2
  step_rows = []
  for arch, loss, batch, kw in (("small-cnn", "std", 128, dict(in_channels=3, size=28)),
                                ("small-cnn", "era", 128, dict(in_channels=3, size=28)),
                                ("resnet18", "std", 32, {}), ("resnet18", "era", 32, {})):
    what = f"jitted `make_train_step` {arch} loss={loss}"
    try:
      ips, sec = step_rate(arch, loss, batch, steps, **kw)
    except Exception as e:  # pylint: disable=broad-except
      rows.append([what, batch, f"failed: {type(e).__name__}: {str(e)[:100]}"])
      continue
    step_rows.append((arch, loss, batch, ips, sec))
    rows.append([f"{what} (best of {steps} steps, {sec:.2f} s/step)", batch, f"{ips:,.1f}"])
  text = (f"Loader: {n} random uint8 32x32x3 images in memory, `augment=\"autoaugment\"`, "
          f"{batches} timed batches after 2 warm-up batches. Training steps: random-init "
          "SmallCNN (3 input channels; its classifier fixes the input "
          "at 28x28x3) and ResNet-18 (32x32x3), SGD momentum, eps 8/255 Linf; ERA (paper variant) runs two 10-step PGD "
          "attacks per step.\n\n")
  text += timing.table(["what", "batch", "images/s"], rows)
  if loader0 and step_rows:
    worst = max(s[3] for s in step_rows)
    text += (f"\n\nThe single-process loader delivers {loader0:,.0f} images/s, "
             f"{loader0 / worst:,.0f}x what the fastest measured training step consumes "
             f"({worst:,.1f} images/s): **the pipeline keeps up** (on this CPU the step, not "
             "the input pipeline, is the bottleneck; the loader competes for the same 2 cores).\n")
  return text
