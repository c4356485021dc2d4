"""The strict name-mapping table between a Flax NNX model and a PyTorch state_dict.

    rules, optional = mapping.table(model)          # one Rule per torch tensor
    mapping.assign(model, state_dict, arch="wrn-28-10")   # torch -> JAX, strict, in place
    sd = mapping.extract(model)                     # JAX -> torch (numpy arrays, torch layout)

The architectures in `jax_abstain.models` name their submodules exactly as the PyTorch modules
they port (``block1.layer.0.conv1``), so a torch key is the NNX path joined by dots with the
leaf renamed by layer type. The table is therefore derived from the model's structure, one
rule per tensor, and the only per-architecture freedom is a `Normalize` that declares
``torch_names`` (DeepMind's ``mean``/``std`` buffers). Layout conversions:

  * conv weight  [O,I,kh,kw] (OIHW)  <->  kernel [kh,kw,I,O] (HWIO)
  * linear weight [out,in]           <->  kernel [in,out]
  * BN weight/bias/running_mean/running_var <-> scale/bias/mean/var (``num_batches_tracked``
    is optional on input, it does not affect eval-mode outputs, and written as 0 on export)
  * normalization buffer [C,1,1]     <->  [C]

Nothing is ever skipped silently: a missing, unexpected or mis-shaped key is a `UserError`
that lists them.
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
  kind: str            # "conv" | "linear" | "copy" | "channel_buffer"
  torch_shape: tuple

  def to_jax(self, value: np.ndarray) -> np.ndarray:
    if self.kind == "conv":
      return np.transpose(value, (2, 3, 1, 0))
    if self.kind == "linear":
      return np.transpose(value)
    if self.kind == "channel_buffer":
      return value.reshape(-1)
    return value

  def to_torch(self, value: np.ndarray) -> np.ndarray:
    if self.kind == "conv":
      return np.transpose(value, (3, 2, 0, 1))
    if self.kind == "linear":
      return np.transpose(value)
    return value.reshape(self.torch_shape)


def _key(path) -> str:
  return ".".join(str(p) for p in path)


def _modules(model):
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Module):
      yield tuple(path), node


def table(model: nnx.Module) -> tuple[list[Rule], set[str]]:
  """The mapping for `model`: (rules, optional torch keys).

  Raises:
    TypeError: the model contains a parameterised layer the table does not know, so it could
      not be ported faithfully.
  """
  rules, optional = [], set()
  covered = set()
  for path, mod in _modules(model):
    prefix = _key(path)
    dot = prefix + "." if prefix else ""
    if isinstance(mod, nnx.Conv):
      k = mod.kernel.get_value().shape
      rules.append(Rule(dot + "weight", path + ("kernel",), "conv", (k[3], k[2], k[0], k[1])))
      if mod.bias is not None:
        rules.append(Rule(dot + "bias", path + ("bias",), "copy", tuple(mod.bias.get_value().shape)))
    elif isinstance(mod, nnx.Linear):
      k = mod.kernel.get_value().shape
      rules.append(Rule(dot + "weight", path + ("kernel",), "linear", (k[1], k[0])))
      if mod.bias is not None:
        rules.append(Rule(dot + "bias", path + ("bias",), "copy", tuple(mod.bias.get_value().shape)))
    elif isinstance(mod, nnx.BatchNorm):
      for torch_leaf, leaf in _BN_LEAVES:
        if getattr(mod, leaf, None) is None:
          raise TypeError(f"{prefix}: BatchNorm without {leaf} cannot be ported")
        rules.append(Rule(dot + torch_leaf, path + (leaf,), "copy",
                          tuple(getattr(mod, leaf).get_value().shape)))
      optional.add(dot + "num_batches_tracked")
    elif isinstance(mod, layers.Normalize):
      if mod.torch_names is not None:
        parent = _key(path[:-1])
        pdot = parent + "." if parent else ""
        for torch_leaf, leaf in zip(mod.torch_names, ("mean", "std")):
          c = getattr(mod, leaf).get_value().shape[0]
          rules.append(Rule(pdot + torch_leaf, path + (leaf,), "channel_buffer", (c, 1, 1)))
      else:
        covered.update({path + ("mean",), path + ("std",)})
    else:
      continue
  covered.update(r.path for r in rules)
  # Every trainable or statistics variable must be covered by a rule: a new layer type must
  # get an explicit mapping rather than silently keeping its random initialisation.
  for path, node in nnx.iter_graph(model):
    if isinstance(node, (nnx.Param, nnx.BatchStat)) and tuple(path) not in covered:
      raise TypeError(f"no porting rule for {_key(path)} ({type(node).__name__})")
  return rules, optional


def _listing(keys, limit=8) -> str:
  keys = sorted(keys)
  shown = ", ".join(keys[:limit])
  return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check(rules, optional, state_dict: dict, arch: str) -> None:
  """Raises a UserError listing missing, unexpected and mis-shaped keys, if any."""
  expected = {r.torch_key: r for r in rules}
  missing = set(expected) - set(state_dict)
  unexpected = set(state_dict) - set(expected) - set(optional)
  misshaped = [f"{k} {tuple(np.shape(state_dict[k]))} != {r.torch_shape}"
               for k, r in expected.items()
               if k in state_dict and tuple(np.shape(state_dict[k])) != r.torch_shape]
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing keys ({_listing(missing)})")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
  if misshaped:
    problems.append(f"{len(misshaped)} mis-shaped keys ({_listing(misshaped)})")
  if problems:
    raise UserError(f"checkpoint does not match architecture {arch!r}: " + "; ".join(problems))


def _variable(model, path):
  node = model
  for p in path:
    node = node[p] if isinstance(p, int) else getattr(node, p)
  return node


def assign(model: nnx.Module, state_dict: dict, arch: str) -> None:
  """Copies a torch-layout state_dict (name -> np.ndarray) into `model`, strictly, in place.

  Args:
    model: a model of the matching architecture (its values are overwritten).
    state_dict: tensor name -> numpy array, already unwrapped (see `checkpoint.read`).
    arch: architecture name, for messages.

  Raises:
    UserError: missing, unexpected or mis-shaped keys (all listed, nothing assigned).
  """
  rules, optional = table(model)
  check(rules, optional, state_dict, arch)
  for r in rules:
    var = _variable(model, r.path)
    value = r.to_jax(np.asarray(state_dict[r.torch_key])).astype(var.get_value().dtype)
    var.set_value(jnp.asarray(value))


def extract(model: nnx.Module) -> dict:
  """The model's weights as a torch-layout state_dict of numpy arrays (name -> array).

  BatchNorm ``num_batches_tracked`` entries are included as int64 zeros so that the result
  loads into the PyTorch module with ``strict=True``.
  """
  rules, optional = table(model)
  out = {}
  for r in rules:
    out[r.torch_key] = np.ascontiguousarray(r.to_torch(np.asarray(_variable(model, r.path).get_value())))
  for k in sorted(optional):
    out[k] = np.zeros((), np.int64)
  return out
