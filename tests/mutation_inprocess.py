"""mutmut's mutants, judged in long-lived test processes (`mutation_rates.py --in-process`).

mutmut (`mutation_rates.py` without the flag) forks a worker per mutant that imports the
mutated package, collects the test files and compiles every jit function afresh: 10-30 s a
mutant on this 2-core machine, hours for the ~1,300 mutants of the numerical core. This runner
uses what mutmut prepared (the mutated copy in ``mutants/``, its map from functions to the tests
that reach them, ``mutants/mutmut-stats.json``) and judges the mutants one after another in
`WORKERS` processes that stay alive. Per mutant a worker

  1. sets ``MUTANT_UNDER_TEST`` (mutmut's trampolines read it at every call);
  2. clears JAX's caches (`jax.clear_caches`: traced and compiled functions, eager
     primitives), so no function traced under the original or another mutant is reused; the
     trampoline runs again when a function is traced again;
  3. runs ``pytest -x`` on the tests mutmut found for the mutated function, fastest first;

and writes mutmut's verdict (pytest's exit code: 1 killed, 0 survived; 33 no test reaches the
function; 36 timeout) into ``mutants/<module>.py.meta``, where mutmut's own runs and
`mutation_rates.py --table` read it. A mutant that hangs (an endless loop) is ended by killing
its worker after `timeout_s`; a fresh worker takes the rest of the list.

    python tests/mutation_rates.py --in-process --only losses     # via the rates script
"""
import json
import os
import pathlib
import queue
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
WORKERS = 2
NICE = 10
PYTEST_ARGS = ["--rootdir=.", "-x", "-q", "--tb=no", "--no-header", "-p", "no:cacheprovider",
               "-p", "no:randomly", "-m", "not slow", "-o", "addopts="]
TIMEOUT, NO_TESTS, SEGFAULT = 36, 33, -11
_META_LOCK = threading.Lock()


def _stats():
  return json.loads((MUTANTS / "mutmut-stats.json").read_text())


def jobs(names):
  """[(mutant, tests fastest first, timeout_s)] for mutmut mutant names."""
  stats = _stats()
  by_fn, durations = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
  out = []
  for name in names:
    tests = sorted(by_fn.get(name.partition("__mutmut_")[0], ()),
                   key=lambda t: (durations.get(t, 0.0), t))
    out.append((name, tests, 120.0 + 10.0 * sum(durations.get(t, 0.0) for t in tests)))
  return out


def _meta_path(name: str) -> pathlib.Path:
  module = name.partition("__mutmut_")[0].rsplit(".", 1)[0]
  return MUTANTS / (module.replace(".", "/") + ".py.meta")


def record(name: str, code: int, seconds: float) -> None:
  """Writes one verdict into mutmut's meta file of the mutant's module."""
  with _META_LOCK:
    path = _meta_path(name)
    meta = json.loads(path.read_text())
    meta["exit_code_by_key"][name] = code
    meta["durations_by_key"][name] = seconds
    tmp = path.with_suffix(".meta.tmp")
    tmp.write_text(json.dumps(meta, indent=4))
    tmp.replace(path)


def _spawn(todo, log):
  with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    json.dump(todo, f)
  cmd = ["nice", "-n", str(NICE), sys.executable, str(pathlib.Path(__file__).resolve()),
         "--worker", f.name]
  return subprocess.Popen(cmd, cwd=MUTANTS, stdout=subprocess.PIPE, stderr=log, text=True,
                          start_new_session=True)


def _lines(proc):
  """A queue of the worker's stdout lines ('' at its end), filled by a reader thread."""
  q = queue.Queue()

  def read():
    for line in proc.stdout:
      q.put(line)
    q.put("")
  threading.Thread(target=read, daemon=True).start()
  return q


def _drive(todo, log_path, progress):
  """Runs the jobs `todo` in one worker after another (a new one after a timeout)."""
  limit_of = {n: t for n, _, t in todo}
  with open(log_path, "a") as log:
    while todo:
      proc, current, started = _spawn(todo, log), None, time.time()
      lines = _lines(proc)
      while True:
        try:
          line = lines.get(timeout=5.0)
        except queue.Empty:
          if current is not None and time.time() - started > limit_of[current]:
            os.killpg(proc.pid, 9)
            proc.wait()
            record(current, TIMEOUT, time.time() - started)
            progress(current, TIMEOUT)
            todo = [j for j in todo if j[0] != current]
            break
          continue
        if not line:                   # the worker ended: all done, or it crashed
          proc.wait()
          if current is not None:      # crashed inside a mutant's tests: mutmut's "segfault"
            record(current, SEGFAULT, time.time() - started)
            progress(current, SEGFAULT)
            todo = [j for j in todo if j[0] != current]
          elif proc.returncode:
            raise RuntimeError(f"mutant worker failed before any mutant, see {log_path}")
          else:
            todo = []
          break
        word, name, *rest = line.split()
        if word == "START":
          current, started = name, time.time()
        elif word == "DONE":
          record(name, int(rest[0]), float(rest[1]))
          progress(name, int(rest[0]))
          todo = [j for j in todo if j[0] != name]
          current = None


def run(names, workers: int = WORKERS) -> None:
  """Judges the mutants `names` in `workers` processes; verdicts go to mutants/*.meta."""
  todo = jobs(names)
  for name, tests, _ in todo:
    if not tests:
      record(name, NO_TESTS, 0.0)
  todo = [j for j in todo if j[1]]
  shards = [todo[i::workers] for i in range(workers)]
  done, lock, start = [0], threading.Lock(), time.time()

  def progress(name, code):
    with lock:
      done[0] += 1
      print(f"[{done[0]}/{len(todo)} {time.time() - start:.0f}s] {code:3d} {name}", flush=True)

  threads = [threading.Thread(target=_drive, args=(s, MUTANTS / f"inprocess-{i}.log", progress))
             for i, s in enumerate(shards) if s]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  print(f"{len(todo)} mutants in {time.time() - start:.0f} s", flush=True)


def worker(job_file: str) -> None:
  """The worker loop: ``START name`` and ``DONE name code seconds`` lines on stdout; pytest's
  own output goes to stderr (the supervisor's log)."""
  out = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)
  sys.path.insert(0, os.getcwd())
  import jax
  import pytest
  todo = json.loads(pathlib.Path(job_file).read_text())
  # Import the test modules under the original code: module-level values are computed once.
  os.environ["MUTANT_UNDER_TEST"] = ""
  pytest.main([*PYTEST_ARGS, "--collect-only", *sorted({t.split("::")[0] for _, ts, _ in todo
                                                          for t in ts})])
  for name, tests, _ in todo:
    print("START", name, file=out, flush=True)
    t0 = time.time()
    os.environ["MUTANT_UNDER_TEST"] = name
    jax.clear_caches()
    code = int(pytest.main([*PYTEST_ARGS, *tests]))
    code = 1 if code == 3 else code    # an internal error in pytest is a kill (mutmut's rule)
    print("DONE", name, code, f"{time.time() - t0:.2f}", file=out, flush=True)
  os.environ["MUTANT_UNDER_TEST"] = ""


if __name__ == "__main__":
  if sys.argv[1:2] == ["--worker"]:
    worker(sys.argv[2])
  else:
    run(sys.argv[1:])
