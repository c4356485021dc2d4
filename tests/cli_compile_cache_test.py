"""The command lines' persistent compilation cache: in the user's cache folder, opt-out by flag
or environment, a JAX_COMPILATION_CACHE_DIR of the user's left alone."""
import os
import subprocess
import sys

import pytest

from jax_abstain.cli import common

PROGRAM = """
import sys, jax, jax.numpy as jnp
from jax_abstain.cli import common
print(common.enable_compile_cache(sys.argv[1:]))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()
"""


def _run(tmp_path, *argv, **env):
  full = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",
                                                           common.CACHE_ENV)}
  full.update(XDG_CACHE_HOME=str(tmp_path / "cache"), **env)
  out = subprocess.run([sys.executable, "-c", PROGRAM, *argv], env=full, capture_output=True,
                       text=True, check=True, timeout=120)
  folder = tmp_path / "cache" / "jax_abstain" / "xla"
  return out.stdout.strip(), sorted(os.listdir(folder)) if folder.exists() else []


def test_cache_is_written_in_the_users_cache_folder(tmp_path):
  argv, files = _run(tmp_path, "--x=1")
  assert argv == "['--x=1']"
  assert any(f.startswith("jit_") and f.endswith("-cache") for f in files), files


@pytest.mark.parametrize("how", ["flag", "env"])
def test_opt_out_by_flag_or_environment(tmp_path, how):
  if how == "flag":
    argv, files = _run(tmp_path, "--no-compile-cache", "--x=1")
    assert argv == "['--x=1']"   # the flag is consumed, the rest passed on
  else:
    _, files = _run(tmp_path, **{common.CACHE_ENV: "0"})
  assert files == []


def test_users_own_cache_dir_wins(tmp_path):
  own = tmp_path / "own"
  _, files = _run(tmp_path, JAX_COMPILATION_CACHE_DIR=str(own))
  assert files == [] and any(f.endswith("-cache") for f in os.listdir(own))
