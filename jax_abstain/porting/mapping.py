"""The strict name-mapping table between a Flax NNX model and a PyTorch state_dict.

    table = mapping.table(model)                    # one Rule per torch tensor, and the rest
    mapping.assign(model, state_dict, arch="wrn-28-10")   # torch -> JAX, strict, in place
    sd = mapping.extract(model)                     # JAX -> torch (numpy arrays, torch layout)

The architectures in `jax_abstain.models` name their submodules exactly as the PyTorch modules
they port (``block1.layer.0.conv1``), so a torch key is the NNX path joined by dots with the
leaf renamed by layer type. The table is therefore derived from the model's structure, one
rule per tensor. Layout conversions:

  * conv weight  [O,I,kh,kw] (OIHW)  <->  kernel [kh,kw,I,O] (HWIO)
  * linear weight [out,in]           <->  kernel [in,out]
  * BN weight/bias/running_mean/running_var <-> scale/bias/mean/var (``num_batches_tracked``
    is optional on input, it does not affect eval-mode outputs; the ported file's values,
    kept in the manifest, are written back on export)

Keys a zoo's file may or may not hold. The input normalisation (`layers.Normalize`) comes from
the model registry, never from the file: the zoos' modules keep it in buffers that their files
lack (RobustBench's DeepMind WideResNet registers ``mean``/``std`` non-persistent; its
``Wong2020FastNet``, ``Engstrom2019RobustnessNet`` and ``Rice2020OverfittingNet`` have
persistent ``mu``/``sigma`` buffers that the distributed files lack, which RobustBench's
``load_model`` tolerates) or hold (files saved from a ``mu``/``sigma`` module, from a
DeepMind module that registers ``mean``/``std`` persistently as earlier RobustBench versions
did, or from ``normalize_model``, whose ``normalize.mean``/``normalize.std`` are persistent).
When a file holds any of the pairs in `NORMALIZATION_KEYS` ([C], [C,1,1] or [1,C,1,1]), each
is checked against the registry's values and a difference is a `UserError` naming both.
`extract` writes no normalisation keys, as the zoos' files: the result loads into
RobustBench's DeepMind module with ``strict=True`` and into a module with ``mu``/``sigma``
buffers the way ``load_model`` loads those files.

Nothing else is ever skipped silently: a missing, unexpected or mis-shaped key is a
`UserError` that lists them.
"""
import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_abstain.errors import UserError
from jax_abstain.models import layers

_BN_LEAVES = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
              ("running_var", "var"))


@dataclasses.dataclass(frozen=True)
class Rule:
  """One torch tensor <-> one NNX variable."""
  torch_key: str
  path: tuple          # NNX path of the variable (attribute names and list indices)
  kind: str            # "conv" | "linear" | "copy"
  torch_shape: tuple

  def to_jax(self, value: np.ndarray) -> np.ndarray:
    if self.kind == "conv":
      return np.transpose(value, (2, 3, 1, 0))
    if self.kind == "linear":
      return np.transpose(value)
    return value

  def to_torch(self, value: np.ndarray) -> np.ndarray:
    if self.kind == "conv":
      return np.transpose(value, (3, 2, 0, 1))
    if self.kind == "linear":
      return np.transpose(value)
    return value.reshape(self.torch_shape)


# The names under which zoo files carry a network's input normalisation (mean, std), relative
# to the module holding the `layers.Normalize` (the root for every architecture here):
# DeepMind / RobustBench's DMWideResNet, RobustBench's wrappers with `mu`/`sigma` buffers, and
# RobustBench's `normalize_model` (`nn.Sequential(normalize=ImageNormalizer, model=net)`).
NORMALIZATION_KEYS = (("mean", "std"), ("mu", "sigma"), ("normalize.mean", "normalize.std"))
# Stored constants agree with the registry's to this relative precision (a half-precision file
# rounds them by up to 2^-11); the normalisations the zoos use differ by 1 % or more.
NORMALIZATION_RTOL = 1e-3


@dataclasses.dataclass(frozen=True)
class Fixed:
  """An optional torch key whose value the registry fixes: checked if present, never assigned."""
  torch_key: str
  name: str            # "mean" | "std"
  expected: tuple      # C floats

  def shape_ok(self, value: np.ndarray) -> bool:
    """[C], [C,1,1] or [1,C,1,1]: C values along one axis."""
    shape = np.shape(value)
    return int(np.prod(shape)) == len(self.expected) and sum(d != 1 for d in shape) <= 1

  def agrees(self, value: np.ndarray) -> bool:
    return bool(np.allclose(np.reshape(value, -1), self.expected, rtol=NORMALIZATION_RTOL, atol=0))


@dataclasses.dataclass(frozen=True)
class Table:
  """The mapping of one model: tensors to assign, BN counters to accept, constants to check."""
  rules: list            # Rule per torch tensor, all required
  counters: set          # optional BN ``num_batches_tracked`` keys
  fixed: dict            # torch key -> Fixed (optional normalisation constants)


def _key(path) -> str:
  return ".".join(str(p) for p in path)


def _modules(model):
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Module):
      yield tuple(path), node


def _fixed(path, mod) -> dict:
  """The optional normalisation keys of a mean/std `Normalize` at `path` (none per image)."""
  if mod.mode != "mean_std":
    return {}
  parent = _key(path[:-1])
  pdot = parent + "." if parent else ""
  return {pdot + key: Fixed(pdot + key, name, values)
          for pair in NORMALIZATION_KEYS
          for key, name, values in zip(pair, ("mean", "std"), mod.init_values)}


def table(model: nnx.Module) -> Table:
  """The mapping for `model` (see `Table`).

  Raises:
    TypeError: the model contains a parameterised layer the table does not know, so it could
      not be ported faithfully.
  """
  rules, counters, fixed = [], set(), {}
  covered = set()
  for path, mod in _modules(model):
    prefix = _key(path)
    dot = prefix + "." if prefix else ""
    if isinstance(mod, (nnx.Conv, nnx.Linear)):
      k = mod.kernel.get_value().shape
      conv = isinstance(mod, nnx.Conv)
      rules.append(Rule(dot + "weight", path + ("kernel",), "conv" if conv else "linear",
                        (k[3], k[2], k[0], k[1]) if conv else (k[1], k[0])))
      if mod.bias is not None:
        rules.append(Rule(dot + "bias", path + ("bias",), "copy",
                          tuple(mod.bias.get_value().shape)))
    elif isinstance(mod, nnx.BatchNorm):
      for torch_leaf, leaf in _BN_LEAVES:
        if getattr(mod, leaf, None) is None:
          raise TypeError(f"{prefix}: BatchNorm without {leaf} cannot be ported")
        rules.append(Rule(dot + torch_leaf, path + (leaf,), "copy",
                          tuple(getattr(mod, leaf).get_value().shape)))
      counters.add(dot + "num_batches_tracked")
    elif isinstance(mod, layers.Normalize):
      fixed.update(_fixed(path, mod))
      covered.update({path + ("mean",), path + ("std",)})
  covered.update(r.path for r in rules)
  # Every trainable or statistics variable must be covered by a rule: a new layer type must
  # get an explicit mapping rather than silently keeping its random initialisation.
  for path, node in nnx.iter_graph(model):
    if isinstance(node, (nnx.Param, nnx.BatchStat)) and tuple(path) not in covered:
      raise TypeError(f"no porting rule for {_key(path)} ({type(node).__name__})")
  return Table(rules, counters, fixed)


def _listing(keys, limit=8) -> str:
  keys = sorted(keys)
  shown = ", ".join(keys[:limit])
  return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _values(v) -> str:
  return "(" + ", ".join(f"{float(x):.4g}" for x in np.reshape(v, -1)) + ")"


def _normalization_problem(tab: Table, state_dict: dict, arch: str) -> str | None:
  """One phrase naming every stored normalisation constant that differs from the registry's."""
  wrong = [f"{k} {_values(state_dict[k])}" for k, f in sorted(tab.fixed.items())
           if k in state_dict and f.shape_ok(state_dict[k]) and not f.agrees(state_dict[k])]
  if not wrong:
    return None
  names = {f.name: f.expected for f in tab.fixed.values()}
  return (f"its normalisation differs from the registry's: the file has {', '.join(wrong)}, "
          f"{arch!r} normalises with mean {_values(names['mean'])}, std {_values(names['std'])}")


def check(tab: Table, state_dict: dict, arch: str) -> None:
  """Raises a UserError listing missing, unexpected and mis-shaped keys, and normalisation
  constants that differ from the registry's, if any."""
  expected = {r.torch_key: r.torch_shape for r in tab.rules}
  missing = set(expected) - set(state_dict)
  unexpected = set(state_dict) - set(expected) - tab.counters - set(tab.fixed)
  misshaped = [f"{k} {tuple(np.shape(state_dict[k]))} != {shape}" for k, shape in expected.items()
               if k in state_dict and tuple(np.shape(state_dict[k])) != shape]
  misshaped += [f"{k} {tuple(np.shape(state_dict[k]))} != ({len(f.expected)},)"
                for k, f in tab.fixed.items() if k in state_dict and not f.shape_ok(state_dict[k])]
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing keys ({_listing(missing)})")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
  if misshaped:
    problems.append(f"{len(misshaped)} mis-shaped keys ({_listing(misshaped)})")
  if (wrong := _normalization_problem(tab, state_dict, arch)) is not None:
    problems.append(wrong)
  if problems:
    raise UserError(f"checkpoint does not match architecture {arch!r}: " + "; ".join(problems))


def _variable(model, path):
  node = model
  for p in path:
    node = node[p] if isinstance(p, int) else getattr(node, p)
  return node


def assign(model: nnx.Module, state_dict: dict, arch: str) -> list[str]:
  """Copies a torch-layout state_dict (name -> np.ndarray) into `model`, strictly, in place.

  Args:
    model: a model of the matching architecture (its values are overwritten, except its
      input normalisation, which is the registry's).
    state_dict: tensor name -> numpy array, already unwrapped (see `checkpoint.read`).
    arch: architecture name, for messages.

  Returns:
    The normalisation keys the file held (checked against the registry, not assigned).

  Raises:
    UserError: missing, unexpected or mis-shaped keys, or stored normalisation constants that
      differ from the registry's (all listed, nothing assigned).
  """
  tab = table(model)
  check(tab, state_dict, arch)
  for r in tab.rules:
    var = _variable(model, r.path)
    value = r.to_jax(np.asarray(state_dict[r.torch_key])).astype(var.get_value().dtype)
    var.set_value(jnp.asarray(value))
  return sorted(k for k in tab.fixed if k in state_dict)


def extract(model: nnx.Module, counters=None) -> dict:
  """The model's weights as a torch-layout state_dict of numpy arrays (name -> array).

  Args:
    model: a model of this package.
    counters: BatchNorm ``num_batches_tracked`` values: one int for every layer, a dict
      key -> int (the ported file's, recorded in its manifest), or None for 0. They are
      included so that the result loads into the PyTorch module with ``strict=True``; they do
      not change eval-mode outputs, and JAX fine-tuning does not advance them.

  Normalisation constants are not included, as in the zoos' files (module docstring).
  """
  tab = table(model)
  out = {}
  for r in tab.rules:
    out[r.torch_key] = np.array(r.to_torch(np.asarray(_variable(model, r.path).get_value())),
                                order="C")   # a writable copy (torch.from_numpy shares it)
  for k in sorted(tab.counters):
    value = counters.get(k, 0) if isinstance(counters, dict) else counters or 0
    out[k] = np.array(value, np.int64)
  return out
