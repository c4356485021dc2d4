"""Noise of the command lines: JAX's probe of absent platforms ("Unable to initialize backend
'tpu'") is filtered at the command-line entry, nothing else of JAX's log."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# absl's handler at INFO (as under absl.app.run), then JAX starts its backends.
SCRIPT = r"""
import logging, sys
from absl import logging as absl_logging
absl_logging.use_absl_handler()
absl_logging.set_verbosity(absl_logging.INFO)
if sys.argv[1] == "quiet":
  from jax_abstain.cli import common
  common.quiet_backend_probe()
import jax
jax.devices()
logging.getLogger("jax._src.xla_bridge").info("another INFO record of the logger")
"""


def _stderr(mode: str) -> str:
  out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                       timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stderr


def test_backend_probe_line_is_filtered_and_nothing_else():
  # The control shows that this machine's JAX prints the line (it probes the TPU plugin):
  # without it the filtered run would prove nothing.
  loud, quiet = _stderr("loud"), _stderr("quiet")
  assert "Unable to initialize backend" in loud
  assert "Unable to initialize backend" not in quiet
  assert "another INFO record of the logger" in quiet


def test_asked_for_platform_that_fails_still_raises():
  # JAX_PLATFORMS names the platform: its failure is an error, not a filtered INFO record.
  out = subprocess.run([sys.executable, "-c", "from jax_abstain.cli import common; "
                        "common.quiet_backend_probe(); import jax; jax.devices()"],
                       capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                            "JAX_PLATFORMS": "tpu"})
  assert out.returncode != 0 and "Unable to initialize backend 'tpu'" in out.stderr
