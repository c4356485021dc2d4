"""Tiny timing helper: warm-up, block_until_ready, best/median of repeats."""
import statistics
import time

import jax


def block(out):
  """Waits for JAX arrays in `out` (other values pass through)."""
  return jax.block_until_ready(out)


def measure(fn, *, warmup: int = 1, repeats: int = 5):
  """Seconds per call of ``fn()``: dict(best, median, all) after `warmup` untimed calls."""
  for _ in range(warmup):
    block(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - t)
  return {"best": min(times), "median": statistics.median(times), "all": times}


def interleaved(fns: dict, *, warmup: int = 1, repeats: int = 5):
  """Like `measure` for several callables, alternating them each repeat (load hits all)."""
  for fn in fns.values():
    for _ in range(warmup):
      block(fn())
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t = time.perf_counter()
      block(fn())
      times[k].append(time.perf_counter() - t)
  return {k: {"best": min(v), "median": statistics.median(v), "all": v} for k, v in times.items()}


def flops(fn, *args) -> float:
  """XLA's cost-analysis FLOP count of ``jax.jit(fn)(*args)`` (nan if unavailable)."""
  try:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost.get("flops", float("nan")))
  except Exception:  # pylint: disable=broad-except
    return float("nan")


# Issue-10 targets measured by the sections of one run.
TARGETS: list = []


def target(section: str, what: str, goal: float, value: float, kind: str = "ratio") -> None:
  """Records a measured target: kind "ratio" = speed / PyTorch's speed in the same process;
  kind "peak" = achieved GFLOP/s / measured matmul peak. Met when value >= goal."""
  TARGETS.append(dict(section=section, target=what, goal=goal, ratio=float(value), kind=kind))


def table(header, rows) -> str:
  """A markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)
