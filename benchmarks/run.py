"""Runs the benchmark sections and rewrites BENCHMARKS.md.

    python -m benchmarks.run [--quick] [--only NAME]
"""
import argparse
import datetime
import importlib
import json
import os
import pathlib
import platform
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import torch

import jax_abstain
from benchmarks import timing

# Before any JAX computation, as the command lines do (jax_abstain/xla_cpu.py).
XLA_CPU_SETUP = jax_abstain.use_eigen_convolutions()

SECTIONS = ("sequential", "certify", "forward", "pipeline", "apgd", "train", "scaling", "profile",
            "compile", "devices")
TITLES = {"sequential": "1. Sequential certification (`certify_at_radius` vs `certify`)",
          "certify": "2. Certification throughput: JAX vs PyTorch CERTIFY",
          "forward": "3. Forward throughput: ported WRN-28-10 and ResNet-18",
          "pipeline": "4. Input pipeline vs training step",
          "apgd": "5. APGD-CE and AutoAttack vs the official AutoAttack code, on any model",
          "train": "6. Training steps: TRADES and ERA, ours vs PyTorch",
          "scaling": "7. Scaling: batch size, attack steps, noise samples, model width",
          "profile": "8. Profile: where the time goes (XLA operations)",
          "compile": "9. Compilation: compile time of the jitted entry points",
          "devices": "10. Scaling over devices and processes: evaluation and CERTIFY"}
MODULES = {"train": "train_step"}   # section name -> benchmarks module, where they differ
OUT = pathlib.Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def cpu_model() -> str:
  try:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def matmul_peak(n=2048, repeats=5):
  """Best float32 GFLOP/s of n x n matmul in JAX and in PyTorch."""
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((2, n, n), dtype=np.float32)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  dot = jax.jit(jnp.dot)
  res = timing.interleaved({"jax": lambda: dot(ja, jb), "torch": lambda: torch.mm(ta, tb)},
                           warmup=2, repeats=repeats)
  return {k: 2 * n**3 / r["best"] / 1e9 for k, r in res.items()}


def existing_sections() -> dict:
  """Sections of the current BENCHMARKS.md by name, so `--only` replaces just its own."""
  if not OUT.exists():
    return {}
  text = OUT.read_text(encoding="utf-8")
  starts = sorted((text.find(f"## {title}\n"), name) for name, title in TITLES.items()
                  if text.find(f"## {title}\n") >= 0)
  ends = [s for s, _ in starts[1:]] + [len(text)]
  return {name: text[s:e].rstrip() + "\n" for (s, name), e in zip(starts, ends)}


TARGETS_JSON = pathlib.Path(__file__).resolve().parent / "targets.json"


def targets_section(sections) -> str:
  """The targets table: this run's sections replace their rows in benchmarks/targets.json."""
  old = json.loads(TARGETS_JSON.read_text()) if TARGETS_JSON.exists() else []
  rows = [r for r in old if r["section"] not in sections] + timing.TARGETS
  rows.sort(key=lambda r: SECTIONS.index(r["section"]) if r["section"] in SECTIONS else 99)
  tmp = TARGETS_JSON.with_suffix(".tmp")
  tmp.write_text(json.dumps(rows, indent=1))
  tmp.replace(TARGETS_JSON)
  def shown(r, v):
    return f"{100 * v:.0f}% of peak" if r.get("kind") == "peak" else f"{v:.2f}x"
  table = timing.table(["section", "target", "goal", "measured", "met"], [
      (r["section"], r["target"], ">= " + shown(r, r["goal"]), shown(r, r["ratio"]),
       "yes" if r["ratio"] >= r["goal"] else "**no**") for r in rows])
  return ("## Targets (issues 10 and 21)\n\nSpeed ratios against the PyTorch reference in the same "
          "process (above 1x = we are faster) and FLOP rates as a fraction of the measured "
          "matmul peak; each section below has the details and, where a "
          "target is missed, what limits it.\n\n" + table + "\n\n")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
  p.add_argument("--only", choices=SECTIONS, action="append",
                 help="run only this section; the others keep their numbers in BENCHMARKS.md")
  args = p.parse_args(argv)
  sections = args.only or SECTIONS
  cmd = "python -m benchmarks.run" + (" --quick" if args.quick else "") + "".join(
      f" --only {s}" for s in (args.only or []))
  start = time.time()
  try:
    load = os.getloadavg()
  except OSError:
    load = (float("nan"),) * 3
  peaks = matmul_peak()
  peak = max(peaks.values())
  print(f"matmul peak: {peaks}", flush=True)
  parts = existing_sections() if args.only else {}
  stamp = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}"
  for name in sections:
    t = time.time()
    print(f"== {name}", flush=True)
    try:
      body = importlib.import_module(f"benchmarks.{MODULES.get(name, name)}").run(args.quick, peak)
    except Exception:  # pylint: disable=broad-except
      body = "**FAILED**:\n\n```\n" + traceback.format_exc()[-3000:] + "```\n"
    took = time.time() - t
    print(body, flush=True)
    parts[name] = (f"## {TITLES[name]}\n\n{body}\n_Section wall time: {took:.0f} s; measured "
                   f"{stamp} by `{cmd}`._\n")
  peaks_end = matmul_peak()
  print(f"matmul peak at end: {peaks_end}", flush=True)
  try:
    load_end = os.getloadavg()
  except OSError:
    load_end = (float("nan"),) * 3
  header = f"""# Benchmarks

Last written by `{cmd}` on {stamp} (total {time.time() - start:.0f} s)\
{" — **quick mode: reduced sizes**" if args.quick else ""}. Each section ends with the date
and command that measured it (`--only NAME` re-runs one section and keeps the others); the
machine facts below are from the last run. `make bench` runs every section.

## Machine

- CPUs (nproc): {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable); model: {cpu_model()}
- Python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}), \
torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}
- XLA_FLAGS: `{os.environ.get("XLA_FLAGS", "")}` (jax_abstain's XLA:CPU setting: \
{XLA_CPU_SETUP}; `jax_abstain/xla_cpu.py`)
- Load average at start / end: {load[0]:.2f} / {load_end[0]:.2f} (the machine is shared; other \
processes, e.g. a test suite, may have been running. JAX and PyTorch are timed in the same \
process, interleaved, so load affects both sides of each ratio.)
- Measured float32 matmul peak (2048x2048, best of 5, before the sections): jax.numpy.dot \
{peaks['jax']:.1f} GFLOP/s, torch.mm {peaks['torch']:.1f} GFLOP/s; "of matmul peak" columns \
use the larger, {peak:.1f} GFLOP/s. Measured again after the sections: jax \
{peaks_end['jax']:.1f}, torch {peaks_end['torch']:.1f} GFLOP/s (the spread shows how much the \
shared machine's load moves every number here).
- FLOPs are XLA cost-analysis counts of the direct computation (one multiply-add = 2 FLOPs). \
A fraction above 100% means the library did fewer arithmetic operations than that count \
(e.g. oneDNN's Winograd 3x3 convolutions in PyTorch) and/or the load was lower during the \
section than during the peak measurement; read these columns as relative, not absolute.

"""
  OUT.write_text(header + targets_section(sections) + "\n".join(
      parts[n] for n in SECTIONS if n in parts), encoding="utf-8")
  print(f"wrote {OUT}")


if __name__ == "__main__":
  # grain worker processes (pipeline section, worker_count=2) need parsed absl flags.
  try:
    from absl import flags
    flags.FLAGS(sys.argv[:1], known_only=True)
  except Exception:  # pylint: disable=broad-except
    pass
  main()
