"""Where the time goes: per-operation breakdown of our hot paths from the JAX profiler.

Each workload is compiled and warmed up, then run under `jax.profiler.trace` with a Perfetto
trace; the trace's complete events on XLA's executor threads are summed by operation name
(`convolution.3`, `ynn_fusion`, `loop_fusion.7`, ...) and grouped by kind (the name without its
numeric suffix). The tables show the share of device time per kind: what a further speed-up has
to attack. Workloads: APGD-CE on ResNet-18 (the attack loop), one forward pass of ResNet-18
(certification's inner loop on a CIFAR model).
"""
import collections
import gzip
import json
import pathlib
import re
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import timing
from jax_abstain import attacks, models

# Host-side bookkeeping events, not XLA work.
_HOST = re.compile(r"^(\$|PjitFunction|CommonPjRt|Execute|Allocate|Handle inputs|ParseArguments|"
                   r"SlinkyThreadPool|ThunkExecutor|TfrtCpu|PjRt|Await|.*::)")


def op_breakdown(fn, repeats: int = 2):
  """Runs fn() `repeats` times under the profiler; returns {kind: microseconds} of XLA ops."""
  timing.block(fn())
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(repeats):
        timing.block(fn())
    trace = next(pathlib.Path(d).rglob("perfetto_trace.json.gz"))
    events = json.load(gzip.open(trace))
  events = events["traceEvents"] if isinstance(events, dict) else events
  kinds = collections.Counter()
  for e in events:
    name = e.get("name", "")
    if e.get("ph") != "X" or _HOST.match(name):
      continue
    kinds[re.sub(r"[._]\d+$", "", name)] += e.get("dur", 0.0)
  return kinds


def _table(kinds, top=8):
  total = sum(kinds.values()) or 1.0
  rows = [(k, f"{v / 1e3:,.1f}", f"{100 * v / total:.0f}%") for k, v in kinds.most_common(top)]
  return timing.table(["XLA operation kind", "ms (summed over threads)", "share"], rows)


def _resnet_workloads(quick):
  net = models.create("resnet18", num_classes=10)
  net.eval()
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (16, 32, 32, 3)).astype(np.float32))
  y = jnp.argmax(net(x), -1)
  run = attacks.jit_attack(net, attacks.apgd, eps=8 / 255, n_iter=3 if quick else 5)
  graphdef, state = nnx.split(net)
  fwd = jax.jit(lambda s, z: nnx.merge(graphdef, s)(z))
  return {"APGD-CE on ResNet-18 (batch 16)": lambda: run(x, y, jax.random.key(0)),
          "forward of ResNet-18 (batch 16)": lambda: fwd(state, x)}


def run(quick: bool, peak: float) -> str:  # pylint: disable=unused-argument
  parts = []
  for title, fn in _resnet_workloads(quick).items():
    parts.append(f"**{title}**\n\n" + _table(op_breakdown(fn)))
  return ("Operation kinds: `convolution` = XLA's runtime convolution (Eigen), `ynn_fusion` = "
          "matmul/fusions dispatched to YNNPACK, `*_fusion` = XLA-emitted elementwise/reduction "
          "fusions; times are summed over the executor threads.\n\n" + "\n\n".join(parts) + "\n")
