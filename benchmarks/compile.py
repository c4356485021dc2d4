"""Compile time of the jitted entry points: first call (traces and compiles) minus a second
call with the same shapes (runs only), in one process, with JAX's persistent cache off.

Entry points: APGD-CE (`jax.jit` around `attacks.apgd`), AutoAttack's attacks (bucketed,
`attacks.autoattack_run`), CERTIFY (`smoothing.certify`) and the adversarial training step
(`training.step.make_train_step`), at the README's sizes where they fit the section's budget.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import apgd as apgd_bench, timing
from benchmarks.train_step import JaxStep, step_config
from jax_abstain import attacks, models, smoothing


def _first_second(fn):
  """(first-call s, second-call s) of fn()."""
  times = []
  for _ in range(2):
    t = time.perf_counter()
    timing.block(fn())
    times.append(time.perf_counter() - t)
  return times


def _rows(quick):
  p, _, x, y = apgd_bench.trained_cnn()
  n = 64 if quick else 256
  xj, yj = jnp.asarray(x[:n]), jnp.asarray(y[:n])
  cnn = apgd_bench.nchw_fn(p)
  apgd = jax.jit(lambda x, y, k: attacks.apgd(cnn, x, y, key=k, eps=0.1, n_iter=40))
  key = jax.random.key(0)
  out = [("APGD-CE, 40 it (`jax.jit` around `attacks.apgd`)", f"MNIST CNN, NCHW function, batch {n}",
          _first_second(lambda: apgd(xj, yj, key)))]
  aa_kw = dict(key=key, eps=0.1, run_checks=False)
  out.append(("AutoAttack standard (`attacks.autoattack_run`, every attack and bucket)",
              f"MNIST CNN, NCHW function, {n // 4} digits",
              _first_second(lambda: attacks.autoattack_run(cnn, xj[:n // 4], yj[:n // 4],
                                                           **aa_kw).robust)))
  mlp = models.create("mlp", num_classes=10, in_features=64, hidden=(64, 64, 64))
  mlp.eval()
  xd = jnp.asarray(np.random.default_rng(0).uniform(size=(10, 8, 8, 1)), jnp.float32)
  out.append(("CERTIFY (`smoothing.certify`, n0 = 100, n = 100,000)", "digits MLP, 10 inputs",
              _first_second(lambda: smoothing.certify(mlp, xd, key=key, sigma=0.25)[0])))
  net = models.create("small-cnn", num_classes=10, in_channels=1)
  cfg = step_config("trades", 0.1, batch_size=128)
  step = JaxStep(net, cfg)
  xb = jnp.asarray(x[:128])
  yb = jnp.asarray(y[:128])
  out.append(("TRADES training step, 10-step PGD (`training.step.make_train_step`)",
              "small-cnn, batch 128", _first_second(lambda: step(xb, yb, key))))
  return out


def run(quick: bool, peak: float) -> str:  # pylint: disable=unused-argument
  jax.config.update("jax_enable_compilation_cache", False)
  rows = []
  for what, model, (first, second) in _rows(quick):
    rows.append([what, model, f"{first:.1f}", f"{second:.1f}", f"{max(first - second, 0):.1f}"])
    print(rows[-1], flush=True)
  return ("Compile time = first call - second call (same shapes). AutoAttack compiles each "
          "attack once per power-of-two bucket of survivors (the buckets are the only new "
          "shapes; the target number of APGD-T and FAB-T is an argument, not a shape), and "
          "its jitted attacks are cached per model across calls, so later chunks of an "
          "evaluation compile nothing. The command lines keep compiled programs in the "
          "user's cache folder (`jax_abstain/cli/common.py`, `enable_compile_cache`), so a "
          "second run of the same command skips most of this.\n\n"
          + timing.table(["entry point", "model and size", "first call s", "second call s",
                          "compile s"], rows) + "\n")
