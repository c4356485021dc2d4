"""PyTorch state_dict <-> Flax NNX weights for the architectures in `jax_abstain.models`.

    from jax_abstain import porting
    porting.port("Carmon2019Unlabeled", "carmon.pt", "ported/carmon")   # -> model directory
    net = jax_abstain.models.load("ported/carmon")                     # same logits as torch
    porting.export_state_dict(net, "finetuned.pt")                     # back to PyTorch

Command line: ``python -m jax_abstain.cli.port --arch NAME --checkpoint FILE.pt --out DIR``.
`checkpoint` reads files without unpickling code, `mapping` holds the strict name table.
"""
import pathlib

from jax_abstain import files
from jax_abstain.porting import checkpoint, mapping


def convert(arch: str, checkpoint_path, **options):
  """Reads a checkpoint and returns (model in eval mode, constructor options, source info).

  Args:
    arch: registry name (RobustBench model name or architecture id).
    checkpoint_path: a ``torch.save`` file (or ``.safetensors``).
    **options: constructor overrides (e.g. ``num_classes``).

  The input normalisation is the registry entry's: files that lack it (RobustBench's
  DeepMind models keep it in non-persistent buffers) port as they are, and files that hold it
  are checked against it (`mapping`, module docstring).

  Raises:
    UserError: unknown arch (listing the known ones), unreadable file, or a state_dict that
      does not match the architecture (listing missing/unexpected/mis-shaped keys, or
      normalisation constants that differ from the registry's, with both values).
  """
  from jax_abstain import models  # pylint: disable=import-outside-toplevel
  entry, options = models.resolve(arch, **options)   # unknown names fail before any reading
  state_dict, digest, unwrapped = checkpoint.read_noted(checkpoint_path)
  model = models.io.instantiate(entry.constructor, options)
  checked = mapping.assign(model, state_dict, arch)
  model.eval()
  counters = sorted({int(v) for k, v in state_dict.items() if k.endswith("num_batches_tracked")})
  source = {"file": pathlib.Path(checkpoint_path).name, "sha256": digest,
            "format": "pytorch-state_dict", "tensors": len(state_dict),
            "unwrapped": unwrapped or ["none (a raw state_dict)"],
            # BatchNorm step counters (eval outputs ignore them): kept for `export_state_dict`.
            "num_batches_tracked": (counters[0] if len(counters) == 1 else
                                    {k: int(v) for k, v in state_dict.items()
                                     if k.endswith("num_batches_tracked")} or None),
            "normalization": ("registry, checked against the file's " + ", ".join(checked)
                              if checked else "registry (the file holds none)")}
  return model, options, source


def port(arch: str, checkpoint_path, out, *, overwrite: bool = False, **options) -> pathlib.Path:
  """Ports a checkpoint into model directory `out` (written only if everything matched)."""
  from jax_abstain import models  # pylint: disable=import-outside-toplevel
  model, options, source = convert(arch, checkpoint_path, **options)
  return models.save(model, out, arch=arch, options=options, source=source, overwrite=overwrite)


def to_torch_state_dict(model, counters=None) -> dict:
  """The model's weights as an ordered torch state_dict (name -> torch.Tensor); `counters`
  as in `mapping.extract`."""
  torch = checkpoint._torch()  # pylint: disable=protected-access
  return {k: torch.from_numpy(v) for k, v in mapping.extract(model, counters).items()}


def export_state_dict(model, path, counters=None) -> pathlib.Path:
  """Writes `model`'s weights as a raw PyTorch state_dict file (``torch.save``), without the
  normalisation constants, as the zoos' own files (`mapping.extract`). `counters`: the BN
  ``num_batches_tracked`` values to write (the ``source.num_batches_tracked`` of a ported
  model directory's manifest: one int for all layers, or key -> int), else 0."""
  torch = checkpoint._torch()  # pylint: disable=protected-access
  state_dict = to_torch_state_dict(model, counters)
  return files.atomic_write(path, lambda f: torch.save(state_dict, f))


__all__ = ["checkpoint", "convert", "export_state_dict", "mapping", "port", "to_torch_state_dict"]
