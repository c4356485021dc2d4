"""Mutation testing of the numerical core: runs mutmut module by module, prints kill rates.

    python tests/mutation_rates.py             # run every module of MODULES, then the table
    python tests/mutation_rates.py --only losses metrics
    python tests/mutation_rates.py --table     # only the table of the results in mutants/
    python tests/mutation_rates.py --in-process --survivors   # faster: `mutation_inprocess`

`make mutants` runs the first form (docs/mutation.md). mutmut's settings (the files it mutates,
the fast test files it runs, the fork server) are in pyproject.toml, [tool.mutmut]; this script
chooses the functions that compute numbers (not argument checks or plumbing), runs mutmut once
per module under `nice -n 10` with two workers (the machine is shared), and reads the verdicts
from mutants/<module>.py.meta. Not part of `make test`.
"""
import argparse
import collections
import fnmatch
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Module -> the functions mutated (mutmut names: x_<function>, xǁ<Class>ǁ<method>).
MODULES = {
    "metrics": ["x_*"],
    "losses": ["x_cross_entropy", "x_kl_divergence", "x_trades", "x_top_other_class",
               "x_soft_inaccuracy", "x_robust_inaccuracy_penalty", "x_era", "x_mart", "x_noise",
               "x__safe_ndtri", "x_certified_radius", "x_cra", "x_dga"],
    "smoothing": ["x_lower_confidence_bound", "x_upper_confidence_bound", "x_linf_radius",
                  "x_look_schedule", "x_alpha_spending"],
    "compose": ["x_compose_indicators", "xǁCompositionǁsummary", "xǁCompositionǁis_rob_acc",
                "x_model_accuracy", "x_model_robustness", "x__model_selection",
                "x_default_tau_grid", "x__selector_radii"],
    "attacks.common": ["x_dlr", "x_dlr_targeted", "x_conf", "x_ce"],
    "attacks.apgd": ["x_checkpoint_schedule", "x__step"],
    # An extension (a row of its own): Cohen's PREDICT, CERTIFY and the sequential CERTIFY.
    "smoothing:certify": ["x_predict", "x_certify", "x_certify_at_radius"],
}
KILLED = {1, 3}
TIMEOUT = {24, -24, 152, 255, 36}
# A mutant mutmut runs before `run_in_process`: its run creates mutants/ and the test map.
SEED = "jax_abstain.metrics.x__percent__mutmut_1"


def _globs(module: str) -> list:
  """mutmut name patterns of a `MODULES` entry (``module`` or ``module:row label``)."""
  return [f"jax_abstain.{module.split(':')[0]}.{f}__mutmut_*" for f in MODULES[module]]


def verdicts(module: str, sample: int = 1) -> dict:
  """mutant name -> mutmut exit code (None: not run yet) of `module`'s selected functions;
  with `sample` K > 1 only the mutants numbered 1, K + 1, 2K + 1, ... of each function."""
  meta = ROOT / "mutants" / "jax_abstain" / (module.split(":")[0].replace(".", "/") + ".py.meta")
  if not meta.exists():
    return {}
  codes = json.loads(meta.read_text())["exit_code_by_key"]
  return {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in _globs(module))
          and int(k.rsplit("_", 1)[1]) % sample == 1 % sample}


def run(modules, sample: int = 1) -> int:
  """One mutmut run over the modules' numerical functions (every mutant, or a 1-in-`sample`
  systematic sample, by mutant number); mutmut's exit status."""
  mutmut = pathlib.Path(sys.executable).with_name("mutmut")
  names = []
  for module in modules:
    if sample == 1 or not verdicts(module):      # no meta yet: mutmut creates them
      names += _globs(module)
    else:
      names += sorted(verdicts(module, sample))
  cmd = ["nice", "-n", "10", str(mutmut), "run", "--max-children", "2", *names]
  print("$", " ".join(cmd[:7]), f"... ({len(names)} names)", flush=True)
  return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def run_in_process(modules, sample: int = 1, again: bool = False) -> None:
  """The same verdicts in long-lived processes (`mutation_inprocess`, docs/mutation.md): mutmut
  first generates the mutants and maps functions to tests (one cheap mutant, `SEED`), then the
  mutants without a verdict (with `again`: also the survivors and untested) are judged."""
  import mutation_inprocess  # noqa: PLC0415 (a sibling script, only needed here)
  mutmut = pathlib.Path(sys.executable).with_name("mutmut")
  subprocess.run(["nice", "-n", "10", str(mutmut), "run", "--max-children", "2", SEED],
                 cwd=ROOT, check=True)
  names = sorted(k for m in modules for k, v in verdicts(m, sample).items()
                 if v is None or (again and v in (0, 5, 33)))
  print(f"in-process: {len(names)} mutants", flush=True)
  mutation_inprocess.run(names)


def table(modules, sample: int = 1) -> str:
  """Markdown table: per module mutants, killed (timeouts included), survived, no test, rate."""
  lines = ["| module | mutants | killed | survived | no test | not run | kill rate |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for module in modules:
    c = collections.Counter()
    for code in verdicts(module, sample).values():
      c["killed" if code in KILLED | TIMEOUT else "survived" if code == 0
        else "none" if code is None else "no test" if code in (5, 33) else "other"] += 1
    ran = c["killed"] + c["survived"] + c["no test"] + c["other"]
    rate = f"{100.0 * c['killed'] / ran:.1f}%" if ran else "-"
    lines.append(f"| {module} | {sum(c.values())} | {c['killed']} | {c['survived']} | "
                 f"{c['no test'] + c['other']} | {c['none']} | {rate} |")
  return "\n".join(lines)


def survivors(modules, sample: int = 1) -> list:
  return sorted(k for m in modules for k, v in verdicts(m, sample).items() if v in (0, 5, 33))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--only", nargs="+", choices=list(MODULES), default=list(MODULES))
  p.add_argument("--table", action="store_true", help="only print the table")
  p.add_argument("--survivors", action="store_true", help="also list surviving mutants")
  p.add_argument("--sample", type=int, default=1,
                 help="run only every K-th mutant of each function (default 1: all)")
  p.add_argument("--per-module", action="store_true",
                 help="one mutmut run per module (default: one run for all)")
  p.add_argument("--in-process", action="store_true",
                 help="judge the mutants in long-lived processes (mutation_inprocess.py)")
  p.add_argument("--again", action="store_true",
                 help="with --in-process: judge the survivors and untested mutants again")
  args = p.parse_args(argv)
  if args.in_process and not args.table:
    for group in ([[m] for m in args.only] if args.per_module else [args.only]):
      run_in_process(group, args.sample, args.again)
  elif not args.table:
    for group in ([[m] for m in args.only] if args.per_module else [args.only]):
      run(group, args.sample)
  print(table(args.only, args.sample))
  if args.survivors:
    print("\n".join(survivors(args.only, args.sample)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
