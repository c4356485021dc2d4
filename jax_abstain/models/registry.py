"""Registry of architectures: name -> constructor and metadata.

    from jax_abstain.models import registry
    registry.register("mlp", build_mlp, family="mlp", input_kind="vector")
    model = registry.create("mlp", num_classes=3, in_features=2, seed=0)

Every constructor takes ``num_classes`` and ``rngs`` (a ``flax.nnx.Rngs``) plus its own keyword
arguments, and returns an NNX module mapping inputs in [0,1] to logits.
"""
import dataclasses
import difflib
from typing import Any, Callable

from flax import nnx

from jax_abstain.errors import UserError


@dataclasses.dataclass(frozen=True)
class Entry:
  """One registered architecture (or named pretrained model)."""
  name: str
  constructor: Callable[..., nnx.Module]
  defaults: dict = dataclasses.field(default_factory=dict)
  metadata: dict = dataclasses.field(default_factory=dict)


_REGISTRY: dict[str, Entry] = {}


def register(name: str, constructor: Callable[..., nnx.Module], *, defaults=None, **metadata):
  """Registers `constructor` under `name`; `defaults` are keyword arguments it is called with."""
  if name in _REGISTRY:
    raise ValueError(f"model {name!r} is registered twice")
  _REGISTRY[name] = Entry(name, constructor, dict(defaults or {}), dict(metadata))


def names() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str) -> Entry:
  try:
    return _REGISTRY[name]
  except KeyError:
    close = difflib.get_close_matches(name, names(), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"unknown model {name!r}; {hint}`python -m jax_abstain.cli.port --list` "
                    f"lists the {len(_REGISTRY)} known models") from None


def resolve(name: str, *, num_classes: int | None = None, **kwargs: Any) -> tuple[Entry, dict]:
  """The registry entry for `name` and the full constructor options (defaults + overrides)."""
  entry = get(name)
  options = {**entry.defaults, **kwargs}
  if num_classes is not None:
    fixed = entry.defaults.get("num_classes")
    if entry.metadata.get("robustbench") and num_classes != fixed:
      # The same RobustBench name may be a CIFAR-10 and a CIFAR-100 model with different
      # normalisations: a class count that is not the entry's is the other data set's model.
      raise UserError(f"model {name!r} is RobustBench's {entry.metadata['dataset']} "
                      f"{entry.metadata['threat_model']} model with {fixed} classes, not "
                      f"{num_classes}; `python -m jax_abstain.cli.port --list` names each "
                      "data set's entries")
    options["num_classes"] = num_classes
  if "num_classes" not in options:
    raise UserError(f"model {name!r}: num_classes is required")
  return entry, options


def create(name: str, *, num_classes: int | None = None, seed: int = 0, **kwargs: Any) -> nnx.Module:
  """Builds a freshly initialised model by registry name (in NNX's default train mode).

  Args:
    name: a registered architecture id (``mlp``, ``wrn-28-10``, ...) or RobustBench model name
      (``Carmon2019Unlabeled``, ...).
    num_classes: number of output classes; defaults to the entry's own default.
    seed: initialisation seed (``nnx.Rngs(seed)``).
    **kwargs: architecture options overriding the entry's defaults.
  """
  entry, options = resolve(name, num_classes=num_classes, **kwargs)
  return entry.constructor(rngs=nnx.Rngs(seed), **options)
