"""Run folders: the config and environment of a run, and refusing to mix runs.

    workdir.prepare(path, config)   # writes config.json and environment.json, or refuses

A second run with the same workdir resumes the first; that is only sound with the same
config, so a different one is refused with the differing keys named.
"""
import json
import pathlib
import platform
import subprocess

from jax_abstain import __version__, files, validation
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


def prepare(path, config) -> pathlib.Path:
  """Checks the config, creates the workdir, writes ``config.json`` (or checks it matches) and
  ``environment.json``.

  The config is checked (`validation.check_config`) before anything is created, so a config
  that cannot run leaves no workdir behind and is never recorded as a run's config.
  """
  validation.check_config(config)
  if not str(path).strip():
    raise UserError("--workdir: expected a folder path, got nothing")
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise UserError(f"--workdir: {path} exists and is not a folder")
  path.mkdir(parents=True, exist_ok=True)
  new = json.loads(config.to_json())
  config_path = path / "config.json"
  if config_path.exists():
    old = files.read_json(config_path)
    a, b = _flatten(old), _flatten(new)
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differing:
      shown = ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in differing[:8])
      raise UserError(f"--workdir {path} holds a run with a different config: {shown}; "
                      "use a new workdir or the original config")
  else:
    files.write_json(config_path, new)
  files.write_json(path / "environment.json", environment())
  return path
