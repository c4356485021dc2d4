"""Training metrics: JSONL always, TensorBoard when tensorboardX is installed, tqdm progress.

    writer = MetricWriter(workdir, "era", resume_step=step)
    writer.write_scalars(step, {"loss": 0.31, "acc": 0.92}, kind="train")
    writer.close()
    with logs_above_bars():            # log lines print above the bar, not into it
      announce("era: compiling the training step ...")
      bar = progress_bar(total, initial=step, desc="train era", enabled=True)

The writer has the shape of ``clu.metric_writers.MetricWriter`` (write_scalars, flush, close)
without clu, whose writers import TensorFlow. Lines go to ``<workdir>/metrics_<name>.jsonl``,
one JSON object per call: ``{"model", "kind", "step", ...scalars}``. A resumed run first drops
the lines of steps after its checkpoint (written by the killed run, and written again now), and
any line a killed append cut short, so the file reads like one uninterrupted run. Only JAX
process 0 writes.
"""
import contextlib
import json
import logging as std_logging
import pathlib
import sys

import jax
from absl import logging
from tqdm import tqdm
from tqdm.contrib import DummyTqdmFile

from jax_abstain import files


def _tensorboard(logdir):
  try:
    from tensorboardX import SummaryWriter  # optional: pip install tensorboardX
  except ImportError:
    return None
  return SummaryWriter(logdir=str(logdir))


def _step(line: str, path) -> float:
  """The step of a JSONL line; inf (dropped) for a blank line or one cut short by a killed
  append, with a warning for the latter."""
  if not line.strip():
    return float("inf")
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    logging.warning("%s: dropping a damaged line (a write cut short?): %.80s", path, line)
    return float("inf")


class MetricWriter:
  """Appends scalars to a JSONL file (and TensorBoard); a no-op on processes other than 0."""

  def __init__(self, workdir, name: str, *, resume_step: int = 0):
    self.name = name
    self.enabled = jax.process_index() == 0
    self.path = pathlib.Path(workdir) / f"metrics_{name}.jsonl"
    self._tb = None
    if not self.enabled:
      return
    if self.path.exists():
      kept = [l for l in self.path.read_text().splitlines() if _step(l, self.path) <= resume_step]
      files.atomic_write(self.path, "".join(l + "\n" for l in kept))
    self._tb = _tensorboard(pathlib.Path(workdir) / "tensorboard" / name)

  def write_scalars(self, step: int, scalars: dict, *, kind: str = "train", **fields) -> None:
    if not self.enabled:
      return
    record = {"model": self.name, "kind": kind, "step": int(step), **fields,
              **{k: float(v) for k, v in scalars.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for key, value in scalars.items():
        self._tb.add_scalar(f"{kind}/{key}", float(value), int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def progress_bar(total: int, *, initial: int, desc: str, enabled: bool):
  """A tqdm bar in steps; its default format shows steps/s and the ETA. Process 0 only.

  tqdm's rate (and so the ETA) counts from the bar's creation and leaves out `initial`: the
  loop creates the bar once the step is compiled (`announce`), so compilation is not in the
  ETA. The bar writes to the real stderr, also inside `logs_above_bars`.
  """
  return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
              file=_REAL_STDERR[-1] if _REAL_STDERR else sys.stderr,
              disable=not enabled or jax.process_index() != 0)


def announce(message: str) -> None:
  """One line for the user, e.g. ``compiling the training step ...``: an absl INFO line and,
  when absl's verbosity hides INFO (library use), the same line through ``tqdm.write``.
  Process 0 only."""
  if jax.process_index() != 0:
    return
  logging.info("%s", message)
  if not logging.level_info():
    tqdm.write(message, file=sys.stderr)


_REAL_STDERR = []   # the stderr that `logs_above_bars` replaced (bars write there)


@contextlib.contextmanager
def logs_above_bars():
  """While active, console output prints above the progress bars instead of into them.

  tqdm's documented recipe ("Redirecting writing"): ``sys.stderr`` becomes tqdm's
  `DummyTqdmFile`, whose lines go through ``tqdm.write`` (Python warnings, absl before flag
  parsing or with ``--logtostderr``), and so does the stream of every log handler that writes
  to the real stderr (absl's handler once absl's flags are parsed, a ``logging.basicConfig``
  handler; `logging.StreamHandler.setStream`). Everything is restored on exit.
  """
  real = sys.stderr
  proxy = DummyTqdmFile(real)
  handlers = [h for h in [logging.get_absl_handler().python_handler, *std_logging.root.handlers]
              if isinstance(h, std_logging.StreamHandler) and h.stream is real]
  _REAL_STDERR.append(real)
  sys.stderr = proxy
  for h in handlers:
    h.setStream(proxy)
  try:
    yield
  finally:
    for h in handlers:
      h.setStream(real)
    sys.stderr = real
    _REAL_STDERR.pop()


def log_progress(name: str, step: int, total: int, steps_per_s, scalars: dict) -> None:
  """One absl log line with the rate and the ETA (`logs_above_bars` keeps it off the bar).

  Args:
    steps_per_s: the rate since the last line without compilation, or None (no step timed
      yet: the line says so instead of an ETA).
  """
  if jax.process_index() != 0:
    return
  shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
  if steps_per_s is None:
    logging.info("%s: step %d/%d %s", name, step, total, shown)
    return
  eta = round((total - step) / max(steps_per_s, 1e-9))
  logging.info("%s: step %d/%d %.2f steps/s ETA %dm%02ds %s", name, step, total, steps_per_s,
               eta // 60, eta % 60, shown)
