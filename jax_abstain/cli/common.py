"""Clean command-line failures: one line on stderr, exit status 2, no traceback.

    def main(argv=None) -> int:        # each console script
      return cli.entry(_run, argv)      # XLA:CPU setting, argv, one-line errors
    parser = cli.ArgumentParser(prog="python -m jax_abstain.x")   # argparse, one-line errors

``--debug`` anywhere on the command line (or ``JAX_ABSTAIN_DEBUG=1``) re-raises instead, so
the traceback is shown. `errors.SoundnessError` (a broken attack or certificate contract) is a
bug, never bad input, so it always shows its traceback.

Every entry point also turns on JAX's persistent compilation cache (`enable_compile_cache`):
compiled attacks, certification and training steps are kept in the user's cache folder
(``$XDG_CACHE_HOME/jax_abstain/xla``, default ``~/.cache/jax_abstain/xla``), so a second run
of the same command skips most compilation (BENCHMARKS.md, "Compilation"). Opt out with
``--no-compile-cache`` anywhere on the command line or ``JAX_ABSTAIN_COMPILE_CACHE=0``; a
``JAX_COMPILATION_CACHE_DIR`` the user set is left to JAX.
"""
import argparse
import logging
import os
import sys

from jax_abstain import preemption, xla_cpu
from jax_abstain.errors import UserError

EXIT_USAGE = 2
NO_CACHE_FLAG = "--no-compile-cache"
CACHE_ENV = "JAX_ABSTAIN_COMPILE_CACHE"


def compile_cache_dir() -> str:
  """The user's cache folder for compiled programs: ``$XDG_CACHE_HOME/jax_abstain/xla``
  (``~/.cache/jax_abstain/xla`` when XDG_CACHE_HOME is unset)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jax_abstain", "xla")


def enable_compile_cache(argv: list) -> list:
  """Turns on JAX's persistent compilation cache (module docstring) unless opted out; returns
  argv without ``--no-compile-cache``. JAX's own thresholds decide what is stored (programs
  that took >= 1 s to compile). Call before the first computation."""
  opted_out = NO_CACHE_FLAG in argv or os.environ.get(CACHE_ENV, "1").lower() in ("0", "false",
                                                                                    "no", "off")
  if not opted_out and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    import jax  # pylint: disable=import-outside-toplevel  (no JAX import at module import)
    jax.config.update("jax_compilation_cache_dir", compile_cache_dir())
  return [a for a in argv if a != NO_CACHE_FLAG]


def debug_requested(argv) -> bool:
  """``--debug`` in argv or on the process's command line (absl removes parsed flags from the
  argv it hands on), or ``JAX_ABSTAIN_DEBUG`` set."""
  return ("--debug" in argv or "--debug" in sys.argv[1:]
          or os.environ.get("JAX_ABSTAIN_DEBUG", "") not in ("", "0"))


def fail(message: str) -> None:
  """Prints ``error: <line>`` per line of `message` (one per problem) and exits 2."""
  for line in filter(None, (" ".join(l.split()) for l in str(message).splitlines())):
    print(f"error: {line}", file=sys.stderr)
  sys.exit(EXIT_USAGE)


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are one-line `UserError`s (argparse prints usage + error)."""

  def error(self, message):
    raise UserError(f"{message}; see {self.prog} --help")


def run_with_clean_errors(fn, argv):
  """Calls fn(argv); a UserError or a missing file becomes a one-line message and exit 2; a
  run stopped on SIGTERM with its state saved (`preemption.Preempted`) one line and exit 143."""
  try:
    return fn(argv)
  except preemption.Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(preemption.EXIT_STATUS)
  except (UserError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
          PermissionError) as e:
    if debug_requested(argv):
      raise
    fail(str(e) if isinstance(e, UserError) else f"{e.filename or ''}: {e.strerror or e}")


class _BackendProbeFilter(logging.Filter):
  """Drops JAX's INFO record ``Unable to initialize backend 'tpu': ...``.

  JAX tries every platform it knows when ``JAX_PLATFORMS`` is unset and logs each one that is
  absent at INFO (`jax._src.xla_bridge.backends`); under absl's INFO verbosity that is a line
  on every run of a CPU or GPU machine. A platform the user asks for (``JAX_PLATFORMS=tpu``)
  that fails still raises, and every other record of the logger passes.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno <= logging.INFO
                and str(record.msg).startswith("Unable to initialize backend"))


BACKEND_LOGGER = "jax._src.xla_bridge"


def quiet_backend_probe() -> None:
  """Adds `_BackendProbeFilter` to JAX's backend logger (once; the standard
  `logging.Logger.addFilter`)."""
  logger = logging.getLogger(BACKEND_LOGGER)
  if not any(isinstance(f, _BackendProbeFilter) for f in logger.filters):
    logger.addFilter(_BackendProbeFilter())


def entry(fn, argv=None) -> int:
  """What each console script's ``main(argv=None)`` does: the XLA:CPU setting first (before
  JAX starts, `xla_cpu`), JAX's platform probe kept quiet (`quiet_backend_probe`), argv from
  the process when None, the compilation cache (`enable_compile_cache`), then fn(argv) with
  one-line errors. Returns fn's exit status if it returns an int, else 0."""
  xla_cpu.prefer_eigen_convolutions()
  quiet_backend_probe()
  argv = enable_compile_cache(sys.argv[1:] if argv is None else [str(a) for a in argv])
  result = run_with_clean_errors(fn, argv)
  return result if isinstance(result, int) and not isinstance(result, bool) else 0
