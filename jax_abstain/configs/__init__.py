"""The experiment configs, installed with the package and resolvable by name.

    python -m jax_abstain.main --config=synth --workdir=runs/synth          # by name
    python -m jax_abstain.main --config=configs/synth.py --workdir=runs/s   # from a checkout
    python -m jax_abstain.main --config=my_configs/x.py --workdir=runs/x    # your own file

Each file exposes ``get_config(arg=None)`` returning an ``ml_collections.ConfigDict`` of plain
data (`common.parse_arg` parses the ``:key=value,...`` arguments). `resolve` maps what a user
passes to ``--config`` to a file path: an existing file wins; otherwise ``NAME``,
``NAME.py`` or ``configs/NAME.py`` name one of the files here. `build` calls a config's
``get_config`` from Python (the sweep builds each run's config this way):

    config = configs.build("mnist_era", {"loss": "era", "beta": 0.5})
"""
import importlib.util
import pathlib

from jax_abstain import files
from jax_abstain.errors import UserError

HERE = pathlib.Path(__file__).resolve().parent


def names() -> list:
  """The names of the packaged configs (``synth``, ``mnist5k``, ...)."""
  return sorted(p.stem for p in HERE.glob("*.py")
                if not p.stem.startswith("_") and p.stem not in ("common", "recipe")
                and not files.is_hidden_or_system(p.name))     # no ._synth.py AppleDouble


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


def build(spec: str, arg=None):
  """The ConfigDict of config `spec` (a packaged config's name or a file, as `resolve`) built
  with the arguments `arg` (a dict, ``"k=v,..."`` text or None).

  Raises:
    UserError: an unknown config, or bad arguments (the config's own check).
  """
  path, sep, text = resolve(spec).partition(":")
  if sep and arg is not None:
    raise UserError(f"config {spec!r}: give the arguments either after ':' or as arg")
  loader = importlib.util.spec_from_file_location(f"_config_{pathlib.Path(path).stem}", path)
  module = importlib.util.module_from_spec(loader)
  loader.loader.exec_module(module)
  return module.get_config(text if sep else arg)
