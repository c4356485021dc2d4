"""The experiment configs, installed with the package and resolvable by name.

    python -m jax_abstain.main --config=synth --workdir=runs/synth          # by name
    python -m jax_abstain.main --config=configs/synth.py --workdir=runs/s   # from a checkout
    python -m jax_abstain.main --config=my_configs/x.py --workdir=runs/x    # your own file

Each file exposes ``get_config(arg=None)`` returning an ``ml_collections.ConfigDict`` of plain
data (`common.parse_arg` parses the ``:key=value,...`` arguments). `resolve` maps what a user
passes to ``--config`` to a file path: an existing file wins; otherwise ``NAME``,
``NAME.py`` or ``configs/NAME.py`` name one of the files here.
"""
import pathlib

from jax_abstain.errors import UserError

HERE = pathlib.Path(__file__).resolve().parent


def names() -> list:
  """The names of the packaged configs (``synth``, ``mnist5k``, ...)."""
  return sorted(p.stem for p in HERE.glob("*.py")
                if not p.stem.startswith("_") and p.stem not in ("common", "recipe"))


def resolve(spec: str) -> str:
  """``--config`` value (``PATH_OR_NAME[:args]``) -> the same with a real file path.

  Raises:
    UserError: neither a file nor a packaged config name.
  """
  path, sep, args = str(spec).partition(":")
  if pathlib.Path(path).is_file():
    return spec
  stem = pathlib.Path(path).name
  stem = stem[:-3] if stem.endswith(".py") else stem
  if stem in names() and pathlib.Path(path).parent.name in ("", "configs"):
    return str(HERE / f"{stem}.py") + sep + args
  raise UserError(f"--config: no config file {path!r} and no packaged config of that name; "
                  f"packaged: {', '.join(names())}")
