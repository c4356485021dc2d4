"""`jax_abstain.xla_cpu`: `jax_abstain.use_eigen_convolutions()` (what every command line does
first) turns XLA:CPU's YNNPACK convolutions off (Eigen kernels instead, several times faster
here), unless the user decided otherwise; importing the package changes nothing."""
import ast
import os
import subprocess
import sys

import pytest

from jax_abstain import xla_cpu

# A convolution XLA:CPU (jaxlib 0.10) hands to YNNPACK by default; the compiled HLO then holds a
# `ynn_fusion`. Prints the number of such fusions.
_COUNT_YNN = """
import jax, jax.numpy as jnp
from jax import lax
{imports}
conv = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
text = jax.jit(conv).lower(jnp.zeros((8, 26, 26, 32)), jnp.zeros((3, 3, 32, 32))).compile().as_text()
print(text.count("ynn_fusion"))
"""


def _ynn_fusions(imports: str, **env) -> int:
  environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)}
  environ.update(env)
  out = subprocess.run([sys.executable, "-c", _COUNT_YNN.format(imports=imports)], env=environ,
                       capture_output=True, text=True, check=True)
  return int(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def tested_jaxlib(monkeypatch):
  monkeypatch.setattr(xla_cpu, "_jaxlib_minor", lambda: xla_cpu.TESTED_JAXLIB[0])
  monkeypatch.setattr(xla_cpu, "_backends_started", lambda: False)


def test_flag_is_appended_to_existing_xla_flags(tested_jaxlib):
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert xla_cpu.prefer_eigen_convolutions(env) == "set"
  assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {xla_cpu.FLAG}"
  env = {}
  assert xla_cpu.prefer_eigen_convolutions(env) == "set"
  assert env["XLA_FLAGS"] == xla_cpu.FLAG


@pytest.mark.parametrize("env, reason", [
    ({xla_cpu.OPT_OUT: "1"}, "opted out"),
    ({"XLA_FLAGS": f"--{xla_cpu.FLAG_NAME}=dot"}, "user setting"),
])
def test_user_choice_is_kept(tested_jaxlib, env, reason):
  before = dict(env)
  assert xla_cpu.prefer_eigen_convolutions(env) == reason
  assert env == before


def test_untested_jaxlib_is_left_alone(monkeypatch):
  # XLA aborts the process on an unknown flag: better slow than dead.
  monkeypatch.setattr(xla_cpu, "_jaxlib_minor", lambda: (99, 0))
  env = {}
  assert xla_cpu.prefer_eigen_convolutions(env) == "untested jaxlib"
  assert env == {}


def test_started_backends_warn_on_cpu(monkeypatch):
  import jax
  jax.numpy.zeros(1).block_until_ready()  # backends started in this process
  monkeypatch.setattr(xla_cpu, "_jaxlib_minor", lambda: xla_cpu.TESTED_JAXLIB[0])
  env = {}
  with pytest.warns(RuntimeWarning, match="call it before"):
    assert xla_cpu.prefer_eigen_convolutions(env) == "backends started"
  assert env == {}


# The subprocesses start without the XLA_FLAGS that conftest.py's call put in this process.
_PRINT_XLA_FLAGS = "import os, sys; {imports}; print(repr(os.environ.get('XLA_FLAGS')))"


def _xla_flags_after(imports: str) -> str | None:
  environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)}
  out = subprocess.run([sys.executable, "-c", _PRINT_XLA_FLAGS.format(imports=imports)],
                       env=environ, capture_output=True, text=True, check=True)
  return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_importing_the_package_leaves_xla_flags_alone():
  # Every subpackage too (their imports run on first attribute access).
  every = "import jax_abstain; [getattr(jax_abstain, m) for m in jax_abstain._SUBMODULES]"
  assert _xla_flags_after("import jax_abstain") is None
  assert _xla_flags_after(every) is None


@pytest.mark.skipif(xla_cpu._jaxlib_minor() not in xla_cpu.TESTED_JAXLIB,
                    reason="the flag is only set on tested jaxlib versions")
def test_the_documented_call_removes_ynnpack_convolutions():
  call = "import jax_abstain; jax_abstain.use_eigen_convolutions()"
  assert _xla_flags_after(call) == xla_cpu.FLAG
  assert _ynn_fusions("") >= 1                           # plain JAX: YNNPACK convolution
  assert _ynn_fusions("import jax_abstain") >= 1         # importing changes nothing
  assert _ynn_fusions(call) == 0                         # after the call: Eigen convolution
  assert _ynn_fusions(call, **{xla_cpu.OPT_OUT: "1"}) >= 1
