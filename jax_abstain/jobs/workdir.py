"""Run folders: the settings and environment of a run, and refusing to mix runs.

    job = schema.check(config)
    path = workdir.prepare(path, job)   # writes config.json and environment.json, or refuses

``config.json`` records the checked job (`schema.Job.to_dict`: every setting, defaults filled
in), so it says what ran even if a later version changes a default. A second run with the
same workdir resumes the first; that is only sound with the same settings, so different ones
are refused with the differing fields named.
"""
import json
import pathlib
import platform
import subprocess

from jax_abstain import __version__, files
from jax_abstain.errors import UserError


def _flatten(d, prefix=""):
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
  return out


def _git(*args):
  try:
    here = pathlib.Path(__file__).resolve().parent
    proc = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5)
    return proc.stdout.strip() if proc.returncode == 0 else None
  except (OSError, subprocess.SubprocessError):
    return None


def _git_commit():
  return _git("rev-parse", "HEAD") or None


def _git_dirty():
  """True if the package's tracked files differ from the commit (the commit alone does not
  reproduce the run then); None outside a git checkout."""
  status = _git("status", "--porcelain", "--untracked-files=no", "--", ".")
  return None if status is None else bool(status)


def environment() -> dict:
  """Versions of Python, jax, jaxlib, flax, optax, orbax and this package, the git commit (and
  whether the package's files differ from it) and the devices."""
  import flax
  import jax
  import jaxlib
  import optax
  import orbax.checkpoint
  return {"jax_abstain": __version__, "git_commit": _git_commit(), "git_dirty": _git_dirty(),
          "python": platform.python_version(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "orbax_checkpoint": orbax.checkpoint.__version__,
          "devices": [str(d) for d in jax.devices()], "process_count": jax.process_count()}


def prepare(path, job) -> pathlib.Path:
  """Creates the workdir of a checked `job` (`schema.Job`), writes ``config.json`` (or checks
  that it matches) and ``environment.json``.

  Call it only after `schema.check`, so a config that cannot run leaves no workdir behind and
  is never recorded as a run's config.

  Raises:
    UserError: an empty path, a file in the way, or a workdir holding another job's config.
  """
  if not str(path).strip():
    raise UserError("--workdir: expected a folder path, got nothing")
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise UserError(f"--workdir: {path} exists and is not a folder")
  new = json.loads(json.dumps(job.to_dict()))
  config_path = path / "config.json"
  if config_path.exists():
    a, b = _flatten(files.read_json(config_path)), _flatten(new)
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differing:
      shown = ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in differing[:8])
      raise UserError(f"--workdir {path} holds a run with a different config: {shown}; "
                      "use a new workdir or the original config")
  path.mkdir(parents=True, exist_ok=True)
  if not config_path.exists():
    files.write_json(config_path, new)
  files.write_json(path / "environment.json", environment())
  return path
