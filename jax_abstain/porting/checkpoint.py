"""Reading PyTorch checkpoints the way model zoos save them, without unpickling code.

    sd, sha = checkpoint.read("Carmon2019Unlabeled.pt")   # name -> np.ndarray, file sha256

Accepted layouts: a raw state_dict; a dict holding it under ``state_dict``,
``model_state_dict`` or ``model`` (training scripts also store epoch, optimizer, arch there);
keys with ``module.`` segments (``nn.DataParallel``) anywhere; and a whole-network wrapper
prefix ``1.`` (Cohen et al.'s ``nn.Sequential(NormalizeLayer, net)``) or ``model.``
(RobustBench's ``normalize_model``: ``nn.Sequential(normalize=ImageNormalizer, model=net)``,
whose own ``normalize.mean``/``normalize.std`` stay for `mapping` to check).
Files are opened with ``torch.load(weights_only=True)``: a file that needs arbitrary
unpickling is refused with a message saying how to re-save it.
"""
import pathlib
import pickle

import numpy as np

from jax_abstain import files
from jax_abstain.errors import UserError
from jax_abstain.models.io import sha256

# "last": RobustBench's Andriushchenko2020Understanding and Kireev2021Effectiveness files hold
# {"last": ..., "best": ...}, of which its load_model takes "last" (robustbench/utils.py).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "last")
# Whole-network wrappers: (prefix of the network's keys, keys of the wrapper itself).
WRAPPERS = (("1.", ()), ("model.", ("normalize.mean", "normalize.std")))


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError("porting needs PyTorch (CPU is enough): pip install torch "
                    "--index-url https://download.pytorch.org/whl/cpu") from None
  return torch


def _load(path: pathlib.Path):
  torch = _torch()
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    text = " ".join(str(e).split())
    if "Unsupported global" in text or "Unsupported operand" in text:
      reason = text[text.find("Unsupported"):].split(". ")[0]
      raise UserError(
          f"{path}: the file pickles more than tensors ({reason}); torch.load(weights_only=True) "
          "refuses it. Re-save only the weights where the file was made: "
          "torch.save(model.state_dict(), 'weights.pt')") from None
    text = text.split(". ")[0][:160]
    raise UserError(f"{path}: not a PyTorch checkpoint, or a truncated one ({text})") from None
  except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError,
          AttributeError) as e:
    # torch's legacy (non-zip) reader fails on arbitrary bytes with whatever the first
    # misread field provokes (KeyError on a text file, EOFError on an empty one, ...).
    if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
      raise
    text = " ".join(str(e).split()).split(". ")[0][:160]
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    raise UserError(f"{path}: not a PyTorch checkpoint, or a truncated one ({text})") from None


def _is_tensor_dict(obj) -> bool:
  torch = _torch()
  return isinstance(obj, dict) and bool(obj) and all(
      isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj, path) -> tuple:
  """(the state_dict, the key it was found under or None)."""
  if _is_tensor_dict(obj):
    return obj, None
  if isinstance(obj, dict):
    for key in STATE_DICT_KEYS:
      if key in obj and _is_tensor_dict(obj[key]):
        return obj[key], key
    top = ", ".join(sorted(str(k) for k in obj)[:10])
    raise UserError(f"{path}: no state_dict found (top-level keys: {top}); expected a dict of "
                    f"tensors, raw or under one of {', '.join(STATE_DICT_KEYS)}")
  raise UserError(f"{path}: holds a {type(obj).__name__}, not a state_dict")


def strip_wrappers(state_dict: dict) -> dict:
  """Removes ``module.`` segments and a whole-network ``1.``/``model.`` prefix (`WRAPPERS`)."""
  return _strip(state_dict)[0]


def _strip(state_dict: dict) -> tuple:
  """(`strip_wrappers`'s result, one note per wrapper removed)."""
  out, notes = {}, []
  for k, v in state_dict.items():
    out[".".join(p for p in k.split(".") if p != "module")] = v
  if any("module" in k.split(".") for k in state_dict):
    notes.append("'module.' (nn.DataParallel) removed from the keys")
  for prefix, own in WRAPPERS:
    body = [k for k in out if k not in own]
    if body and all(k.startswith(prefix) for k in body):
      notes.append(f"whole-network prefix {prefix!r} removed")
      return {(k[len(prefix):] if k not in own else k): v for k, v in out.items()}, notes
  return out, notes


def to_numpy(tensor) -> np.ndarray:
  """float tensors become float32 numpy arrays (fp16/bf16 checkpoints included)."""
  torch = _torch()
  t = tensor.detach().cpu()
  if t.is_floating_point():
    t = t.to(torch.float32)
  return t.numpy().copy()


def read(path) -> tuple[dict, str]:
  """Reads a checkpoint file into (state_dict of numpy arrays, sha256 of the file)
  (`read_noted` without the notes)."""
  return read_noted(path)[:2]


def read_noted(path) -> tuple[dict, str, list]:
  """Reads a checkpoint file into (state_dict of numpy arrays, sha256 of the file, notes).

  The notes say how the state_dict was unwrapped (the dict key it was under, ``module.``
  segments and whole-network prefixes removed), for the model directory's manifest.

  Args:
    path: a ``.pt``/``.pth`` file saved with ``torch.save``, or a ``.safetensors`` file.

  Raises:
    UserError: the file is missing, not a checkpoint, truncated, needs full unpickling, or
      holds no state_dict.
  """
  path = files.check_file(path, "checkpoint", "checkpoint")
  notes = []
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    try:
      sd = load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError type
      raise UserError(f"{path}: not a readable safetensors file ({e})") from None
  else:
    found, key = _unwrap(_load(path), path)
    sd = {k: to_numpy(v) for k, v in found.items()}
    if key is not None:
      notes = [f"state_dict taken from the checkpoint's {key!r} entry"]
  sd, stripped = _strip(sd)
  return sd, sha256(path), notes + stripped
