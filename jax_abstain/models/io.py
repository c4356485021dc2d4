"""Model directories: weights (safetensors, never pickle) plus a JSON manifest.

    models.save(net, "out/wrn", arch="wrn-28-10", options={...})
    net = models.load("out/wrn")          # eval-mode NNX module: net(x) -> logits
    logits = net(x)                       # x: [B,H,W,C] float32 in [0,1]

A directory holds ``manifest.json`` (format, architecture, constructor options, classes,
normalization, dataset, threat model, source file and its sha256, weights sha256) and
``weights.safetensors`` (NNX path joined by ``/`` -> array, JAX layouts). `load` rebuilds the
architecture from the registry, checks the weights' hash, names and shapes, and refuses
anything that does not match with a one-line `UserError`. The returned model is in eval mode
(BatchNorm uses running statistics, dropout is off); call ``net.train()`` to fine-tune it.
"""
import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_abstain import files
from jax_abstain.errors import UserError
from jax_abstain.models import layers, registry

FORMAT = "jax-abstain-model/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
# Variables saved: trained parameters, BN statistics and the normalization constants. RNG
# streams (dropout) are not model weights; a loaded model gets fresh ones.
SAVED_TYPES = (nnx.Param, nnx.BatchStat, layers.Constant)


def sha256(path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _flat(model):
  out = {}
  for path, node in nnx.iter_graph(model):
    if isinstance(node, SAVED_TYPES):
      out["/".join(str(p) for p in path)] = node
  return out


def instantiate(constructor, options: dict, seed: int = 0) -> nnx.Module:
  """Builds a model whose weights are placeholders (zeros), to be overwritten by a loader.

  Random initialisation of a WRN-28-10 costs seconds of eager compilation on a CPU;
  `nnx.eval_shape` builds the structure for free, and only the values a loader does not
  overwrite (normalization constants, dropout RNG streams) are materialised here.
  """
  model = nnx.eval_shape(lambda: constructor(rngs=nnx.Rngs(seed), **options))
  for _, node in nnx.iter_graph(model):
    if isinstance(node, layers.Normalize):
      node.mean.set_value(jnp.asarray(node.init_values[0], jnp.float32))
      node.std.set_value(jnp.asarray(node.init_values[1], jnp.float32))
  for path, node in nnx.iter_graph(model):
    if not isinstance(node, nnx.Variable) or not isinstance(node.get_value(), jax.ShapeDtypeStruct):
      continue
    if isinstance(node, nnx.RngKey):
      node.set_value(jax.random.key(seed))
    else:
      spec = node.get_value()
      node.set_value(jnp.asarray(np.zeros(spec.shape, spec.dtype)))
  return model


def _jsonable(value):
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  return value


def manifest_for(model, arch: str, options: dict, source: dict | None = None) -> dict:
  entry = registry.get(arch)
  norm = getattr(model, "normalize", None)
  return {
      "format": FORMAT,
      "architecture": arch,
      "family": entry.metadata.get("family"),
      "options": _jsonable(options),
      "num_classes": options.get("num_classes"),
      "normalization": norm.describe() if isinstance(norm, layers.Normalize) else None,
      "dataset": entry.metadata.get("dataset"),
      "threat_model": entry.metadata.get("threat_model"),
      "input_shape": _jsonable(entry.metadata.get("input_shape")),
      "source": source,
  }


def save(model: nnx.Module, directory, *, arch: str, options: dict,
         source: dict | None = None, overwrite: bool = False) -> pathlib.Path:
  """Writes `model` to `directory` atomically (`files.atomic_directory`, the user's umask).

  Args:
    model: an NNX model built by ``registry.create(arch, **options)`` (or of that topology).
    directory: output folder; must not exist or be empty unless `overwrite`.
    arch: registry name that rebuilds the topology.
    options: constructor options (as returned by ``registry.resolve``).
    source: provenance for the manifest, e.g. {"file": ..., "sha256": ..., "format": ...}.

  Raises:
    UserError: `directory` is not empty and `overwrite` is false.
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(directory)
  with files.atomic_directory(directory, overwrite=overwrite) as tmp:
    arrays = {k: np.ascontiguousarray(np.asarray(v.get_value())) for k, v in _flat(model).items()}
    save_file(arrays, str(tmp / WEIGHTS))
    manifest = manifest_for(model, arch, options, source)
    manifest["weights"] = {"file": WEIGHTS, "sha256": sha256(tmp / WEIGHTS)}
    files.write_json(tmp / MANIFEST, manifest)
  return directory


def read_manifest(directory) -> dict:
  directory = pathlib.Path(directory)
  path = directory / MANIFEST
  if not path.is_file():
    raise UserError(f"{directory}: not a model directory (no {MANIFEST})")
  try:
    manifest = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    found = manifest.get("format") if isinstance(manifest, dict) else None
    raise UserError(f"{path}: unknown format {found!r}, expected {FORMAT!r}")
  return manifest


def load(directory, *, eval_mode: bool = True) -> nnx.Module:
  """Loads a model directory written by `save` or ``jax-abstain-port``.

  Args:
    directory: the model directory.
    eval_mode: return the model in eval mode (default); False gives train mode.

  Returns:
    The NNX module; ``model(x)`` maps x [B,H,W,C] in [0,1] to logits [B,num_classes].

  Raises:
    UserError: missing or corrupt files, a weights hash that differs from the manifest's, or
      weights whose names/shapes do not match the manifest's architecture.
  """
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(directory)
  manifest = read_manifest(directory)
  weights = directory / manifest.get("weights", {}).get("file", WEIGHTS)
  if not weights.is_file():
    raise UserError(f"{directory}: weights file {weights.name} is missing")
  if sha256(weights) != manifest["weights"].get("sha256"):
    raise UserError(f"{weights}: sha256 differs from the manifest (corrupt or replaced file)")
  try:
    arrays = load_file(str(weights))
  except Exception as e:  # safetensors raises its own SafetensorError type
    raise UserError(f"{weights}: not a readable safetensors file ({e})") from None
  try:
    entry, options = registry.resolve(manifest["architecture"], **manifest.get("options", {}))
    model = instantiate(entry.constructor, options)
  except (KeyError, TypeError, ValueError) as e:
    if isinstance(e, UserError):
      raise
    raise UserError(f"{directory}: manifest cannot rebuild the architecture ({e})") from None
  targets = _flat(model)
  missing, unexpected = set(targets) - set(arrays), set(arrays) - set(targets)
  bad = [k for k in set(targets) & set(arrays) if targets[k].get_value().shape != arrays[k].shape]
  if missing or unexpected or bad:
    raise UserError(f"{weights}: does not match architecture {manifest['architecture']!r} "
                    f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}, "
                    f"mis-shaped {sorted(bad)[:5]})")
  for k, var in targets.items():
    var.set_value(jnp.asarray(arrays[k].astype(var.get_value().dtype)))
  if eval_mode:
    model.eval()
  return model
