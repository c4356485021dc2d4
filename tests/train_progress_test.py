"""Training progress as a user sees it: compilation announced and kept out of the bar's rate
and ETA, the bar counting finished steps, log lines printed above the bar, not into it."""
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A fresh interpreter with absl's handler at INFO, as under the command lines (absl.app.run).
SCRIPT = r"""
import sys
from absl import logging
logging.use_absl_handler()
logging.set_verbosity(logging.INFO)
from jax_abstain import data, models, training
x, y = data.load("synthetic", "train", n=200)
net = models.create("mlp", num_classes=3, in_features=2, seed=0)
training.fit(net, x, y, {"loss": "era", "eps": 0.1, "epochs": 2, "batch_size": 10,
                         "log_every": 5, "select_every": 0}, workdir=sys.argv[1], name="m")
"""


def _run(tmp_path):
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                       text=True, timeout=300, env={"PYTHONPATH": str(ROOT),
                                                    "PATH": "/usr/bin:/bin"})
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stderr


def _rates(stderr: str) -> list:
  """Steps per second of every rendered bar (tqdm shows ``s/step`` below 1 step/s)."""
  rates = []
  for value, unit in re.findall(r"train m: .*?, ([\d.]+)(s/step|step/s)", stderr):
    rates.append(float(value) if unit == "step/s" else 1 / float(value))
  return rates


def test_progress_bar_log_lines_and_compilation(tmp_path):
  stderr = _run(tmp_path)
  # Compilation is announced, and the bar starts once the first step has run: it never shows
  # 0/40, and its first rendering already counts the compiled step.
  compiling = stderr.index("m: compiling the training step ...")
  assert compiling < stderr.index("train m:")
  assert not re.search(r"\| 0/40", stderr)
  compile_s = float(re.search(r"m: compiled and ran step 1 in ([\d.]+) s", stderr).group(1))
  bars = re.findall(r"train m: +\d+%\|[^|]*\| (\d+)/40", stderr)
  assert bars[0] == "1" and bars[-1] == "40"
  # The ERA step (a 10-step PGD inside) takes seconds to compile and milliseconds to run: a bar
  # whose clock included compilation would show about 1 step/s or less at first (the old bar
  # showed "1/2000 [00:06<3:34:57, 6.45s/step]").
  rates = _rates(stderr)
  assert rates and min(rates) > 5, rates
  # Log lines every 5 steps start a line of their own: tqdm.write clears the bar first, so
  # nothing of the bar precedes the line after its last carriage return.
  logged = [l for l in stderr.split("\n") if re.search(r"m: step \d+/40", l)]
  assert len(logged) == 8
  for line in logged:
    assert re.match(r"I\d{4} ", line.split("\r")[-1]), repr(line)
  # The rate of the first metrics line (steps 2-5) leaves the compiling step out: counting it
  # would give 5 steps over the compile time and more, five times less than the shown rate.
  records = [json.loads(l) for l in (tmp_path / "metrics_m.jsonl").read_text().splitlines()]
  assert records[0]["step"] == 5 and records[0]["steps_per_s"] > 5 * 5 / compile_s, compile_s
