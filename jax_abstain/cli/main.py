"""Main entry point: ``python -m jax_abstain.main --config=configs/X.py[:args] --workdir=DIR``.

    python -m jax_abstain.main --config=configs/synth.py --workdir=runs/synth
    python -m jax_abstain.main --config=configs/synth.py:eps=0.05 --config.models.era.beta=0.5 \
        --workdir=runs/synth_eps005

Multi-host (one command per host; see launch/multihost.py):
    python -m jax_abstain.main --config=... --workdir=/shared/runs/era \
        --coordinator_address=host0:1234 --num_processes=4 --process_id=$RANK
(or ``--coordinator_address=auto`` on SLURM / Open MPI / Kubernetes, or the environment
variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).

The config's ``mode`` picks the job. The workdir receives ``config.json``,
``environment.json``, results, per-sample reports, checkpoints and plots; running again with
the same workdir and config resumes. Bad flags or config values print one line and exit 2
(``--debug`` shows the traceback).
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jax_abstain import configs, radii, xla_cpu
from jax_abstain.cli import common as cli
from jax_abstain.jobs import workdir as workdir_lib
from jax_abstain.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file [:args].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for config, results, reports, checkpoints.")
flags.DEFINE_bool("debug", False, "Show tracebacks instead of one-line errors.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "host:port of process 0 of a multi-host job, or 'auto' for "
    "jax's cluster detection; empty: $JAX_COORDINATOR_ADDRESS or a single process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes of a multi-host job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's rank in a multi-host job.")


def _modes():
  # Imported lazily: each job pulls in only what it needs.
  from jax_abstain.jobs import evaluate
  from jax_abstain.jobs import toy2d as figure1
  from jax_abstain.jobs import train
  return {"figure1": figure1.run, "train": train.train_and_evaluate, "evaluate": evaluate.run}


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _load_config()
  if config is None:
    raise UserError("--config is required, e.g. --config=configs/synth.py")
  if not _WORKDIR.value:
    raise UserError("--workdir is required, e.g. --workdir=runs/synth")
  if "eps" in config:
    radii.parse_radius(config.eps, name="config.eps")
  for i, r in enumerate(config.get("eval", {}).get("radii", ())):
    radii.parse_radius(r, name=f"config.eval.radii[{i}]")
  modes = _modes()
  if config.get("mode") not in modes:
    raise UserError(f"config.mode: expected one of {', '.join(modes)}, got {config.get('mode')!r}")
  import jax  # after flag parsing, so --help stays fast
  from jax_abstain.training import distributed
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  if config.mode == "train":   # bad settings fail here, before the workdir records the config
    from jax_abstain.jobs import train
    train.preflight(config)
  workdir = workdir_lib.prepare(_WORKDIR.value, config)
  return modes[config.mode](config, workdir)


def _load_config():
  """The parsed config; ml_collections loads the file and applies overrides lazily, here."""
  try:
    config = _CONFIG.value
    if config is not None:
      config.keys()   # a config that failed to load is a proxy that raises on first use
    return config
  except UserError:
    raise
  except Exception as e:  # missing file, syntax error, unknown override key, wrong type, ...
    lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
    raise UserError(f"--config: {lines[-1] if lines else type(e).__name__}") from e


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # absl flag errors and config-file errors (missing file, bad key, ...)
    if cli.debug_requested(argv):
      raise
    if isinstance(e, (KeyError, AttributeError)) or isinstance(e.__cause__, (KeyError, AttributeError)):
      key = str(e).strip("'\" ")
      cli.fail(f"--config: unknown config key {key!r}; see the config file for the known keys")
    # Errors raised inside get_config reach us as text holding their traceback: keep the
    # final "Type: message" line and drop the type.
    message = [l for l in str(e).strip().splitlines() if l.strip()]
    last = message[-1] if message else type(e).__name__
    cli.fail(last.split("Error: ", 1)[-1] if "Traceback" in str(e) else last)


def _main_with_clean_errors(argv):
  cli.run_with_clean_errors(main, argv)


def _resolve_config_args(argv):
  """``--config=NAME`` of a packaged config -> its file (`jax_abstain.configs.resolve`)."""
  out = []
  for a in argv:
    if a.startswith("--config="):
      try:
        a = "--config=" + configs.resolve(a[len("--config="):])
      except UserError as e:
        cli.fail(str(e))
    out.append(a)
  return out


def run():
  xla_cpu.prefer_eigen_convolutions()   # before JAX starts: Eigen convolutions on CPUs
  app.run(_main_with_clean_errors, argv=_resolve_config_args(sys.argv),
          flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
