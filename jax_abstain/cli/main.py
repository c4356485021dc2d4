"""python -m jax_abstain.main --config=NAME|FILE[:args] [--config.a.b=v] --workdir=DIR

    python -m jax_abstain.main --config=configs/synth.py --workdir=runs/synth
    python -m jax_abstain.main --config=synth:eps=0.05 --config.models.era.beta=0.5 --workdir=runs/b
    # one command per host (see jax_abstain.cli.multihost), or --coordinator_address=auto:
    python -m jax_abstain.main --config=... --workdir=/shared/run \
        --coordinator_address=host0:1234 --num_processes=4 --process_id=$RANK

The config's ``mode`` picks the job (`jobs.MODES`). The config is checked once
(`jobs.schema.check`) and what it reads is downloaded (`jobs.inputs.fetch`: data, RobustBench
models) before the workdir receives ``config.json`` and ``environment.json``
(`jobs.workdir.prepare`); running again with the same workdir and config resumes. Bad flags or
config values print one line per problem and exit 2 (``--debug`` shows the traceback).
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from jax_abstain import configs, jobs, xla_cpu
from jax_abstain.cli import common as cli
from jax_abstain.errors import UserError
from jax_abstain.jobs import inputs, schema, workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config name or file [:args].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for config, results, reports, checkpoints.")
flags.DEFINE_bool("debug", False, "Show tracebacks instead of one-line errors.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "host:port of process 0 of a multi-host job, 'auto' (cluster "
    "detection) or '' ($JAX_COORDINATOR_ADDRESS, or one process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes of a multi-host job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's rank in a multi-host job.")


def _job(argv) -> None:
  """absl's main: one job (absl exits with what it returns, so it returns nothing)."""
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:   # ml_collections loads the file and applies the overrides here, on first use
    config = _CONFIG.value.lock()
  except Exception as e:  # missing file, syntax error, unknown key, wrong type, ...
    raise UserError(f"--config: {_last_line(e)}") from e
  from jax_abstain.training import distributed  # imports jax: after the flags
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  job = schema.check(config)   # after initialize: the batch check counts every host's devices
  inputs.fetch(job)            # downloads (data, RobustBench models): before the workdir
  jobs.MODES[job.mode](job, workdir_lib.prepare(_WORKDIR.value, job))


def _last_line(error) -> str:
  """The ``message`` of the last ``Type: message`` line of an error's text (a config that
  fails inside get_config reaches absl as text holding its traceback)."""
  lines = [l.strip() for l in str(error).strip().splitlines() if l.strip()]
  last = lines[-1] if lines else type(error).__name__
  return last.split("Error: ", 1)[-1] if "Traceback" in str(error) else last


_UNKNOWN_KEY = (KeyError, AttributeError)   # what ml_collections raises for --config.nope=1


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # absl flag errors and config-file errors (missing file, bad key, ...)
    if cli.debug_requested(argv):
      raise
    if isinstance(e, _UNKNOWN_KEY) or isinstance(e.__cause__, _UNKNOWN_KEY):
      key = str(e).strip("'\" ")
      cli.fail(f"--config: unknown config key {key!r}; see the config file for the known keys")
    cli.fail(_last_line(e))


def _resolved(arg: str) -> str:
  """``--config=NAME`` of a packaged config -> its file (`jax_abstain.configs.resolve`)."""
  if not arg.startswith("--config="):
    return arg
  try:
    return "--config=" + configs.resolve(arg[len("--config="):])
  except UserError as e:
    return cli.fail(str(e))


def _help() -> int:
  """absl's --help lists the flags of the process's main module, which for a console script
  is pip's wrapper: print this module's own."""
  print(__doc__)
  print(f"packaged configs (--config=NAME): {', '.join(configs.names())}\n")
  print(flags.FLAGS.module_help(__name__))
  return 0


def main(argv=None):
  """The command line (console script ``jax-abstain``); argv defaults to sys.argv."""
  argv = list(sys.argv if argv is None else argv)
  if any(a in ("-h", "--help", "--helpshort", "-?") for a in argv[1:]):
    return _help()
  xla_cpu.prefer_eigen_convolutions()   # before JAX starts: Eigen convolutions on CPUs
  cli.quiet_backend_probe()
  argv = cli.enable_compile_cache(argv)   # persistent compilation cache (opt-out flag/env)
  argv = [_resolved(a) for a in argv]
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda args: cli.run_with_clean_errors(_job, args), argv=argv,
          flags_parser=_parse_flags)


if __name__ == "__main__":
  main()
