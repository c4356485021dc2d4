"""RobustBench models by name: download, port on first use, cache, load (as RobustBench's
``load_model``).

    from jax_abstain import models
    net = models.load_robustbench("Carmon2019Unlabeled", dataset="cifar10", threat_model="Linf")
    models.robustbench_manifest("Carmon2019Unlabeled")   # name, hashes, parity error, ...

The name is looked up in the table generated from RobustBench's zoo
(``jax_abstain/models/robustbench_table.json``, `robustbench_zoo`). The checkpoint is downloaded from
Google Drive by its id (``https://drive.usercontent.google.com/download?id=ID&export=download&
confirm=t``, the URL that RobustBench's ``download_gdrive``/gdown end at after Drive's
confirmation page; ``$JAX_ABSTAIN_ROBUSTBENCH_URL`` or ``url=`` replaces the template, with
``{id}`` for the id) to ``<model_dir>/<dataset>/<threat_model>/<name>.pt``, RobustBench's own
layout, so its ``./models`` folder can serve as `model_dir`. `jax_abstain.download.fetch`
resumes a cut download and checks its length; Drive publishes no checksums, so the file's
sha256 is recorded in the manifest instead, and a web page served in place of a checkpoint
(Drive's quota page) is refused. The port is checked against RobustBench's own module when
the ``robustbench`` package is installed (`robustbench_torch`): max |logit difference| over
`PARITY_INPUTS` random images, relative to the largest |logit|, must be at most
`PARITY_RTOL`, else nothing is cached. The ported model goes to ``<name>.jax/`` beside the
checkpoint (a model directory, `jax_abstain.models.io`) and later calls load it without
network or PyTorch.

Entries whose architecture the Flax zoo does not build are refused in one line naming it
(the generic path would be torchax, which does not import with the installed PyTorch).
"""
import difflib
import os
import pathlib

import jax.numpy as jnp
import numpy as np

from jax_abstain import download
from jax_abstain.errors import UserError

ENV_URL = "JAX_ABSTAIN_ROBUSTBENCH_URL"
DEFAULT_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
PARITY_INPUTS = 4
PARITY_RTOL = 1e-4
_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100"}
_THREATS = {"linf": "Linf", "l2": "L2"}


def _zoo():
  from jax_abstain.models import zoo  # pylint: disable=import-outside-toplevel
  return zoo


def entry(name: str, dataset: str = "cifar10", threat_model: str = "Linf") -> dict:
  """The table row of RobustBench's `name` on `dataset` under `threat_model`.

  Raises:
    UserError: unknown data set, threat model or name (with the closest names, and the
      leaderboards that do list the name).
  """
  ds = _DATASETS.get(str(dataset).lower().replace("-", ""))
  threat = _THREATS.get(str(threat_model).lower())
  if ds is None or threat is None:
    raise UserError(f"RobustBench models are loaded for dataset cifar10 or cifar100 and "
                    f"threat_model Linf or L2, not {dataset!r}/{threat_model!r}")
  rows = _zoo().robustbench_rows()
  for row in rows:
    if (row["dataset"], row["threat_model"], row["name"]) == (ds, threat, name):
      return row
  elsewhere = [f"{r['dataset']} {r['threat_model']}" for r in rows if r["name"] == name]
  if elsewhere:
    raise UserError(f"RobustBench has no {ds} {threat} model {name!r}; it has one for "
                    + ", ".join(elsewhere))
  close = difflib.get_close_matches(name, sorted({r["name"] for r in rows
                                                  if r["dataset"] == ds}), n=3)
  hint = f"; did you mean {', '.join(close)}?" if close else ""
  raise UserError(f"unknown RobustBench {ds} {threat} model {name!r}{hint} (`python -m "
                  "jax_abstain.cli.port --list` lists them)")


def status(row: dict) -> str:
  """"native" (a Flax architecture of the zoo) or "not" (refused with `refusal`)."""
  return "native" if row["family"] else "not"


def refusal(row: dict) -> str:
  return (f"RobustBench's {row['dataset']} {row['threat_model']} {row['name']} is not "
          f"supported: its architecture ({row['reason']}) is not built by jax_abstain.models, "
          "and the generic path (torchax) does not import with the installed PyTorch")


def url_for(gdrive_id: str, url: str | None = None) -> str:
  template = url or os.environ.get(ENV_URL) or DEFAULT_URL
  return template.format(id=gdrive_id)


def folder(row: dict, model_dir=None) -> pathlib.Path:
  root = pathlib.Path(model_dir).expanduser() if model_dir else (
      download.cache_dir("models") / "robustbench")
  return root / row["dataset"] / row["threat_model"]


def fetch_checkpoint(row: dict, model_dir=None, *, progress=True, url=None) -> pathlib.Path:
  """Downloads the entry's checkpoint (or finds it) as RobustBench stores it.

  Raises:
    UserError: offline or a server error (one line: which file, where to put it), a cut
      download (run again to resume), or a web page instead of a checkpoint (removed).
  """
  dest = folder(row, model_dir) / f"{row['name']}.pt"
  source = url_for(row["gdrive_ids"][0], url)
  download.fetch(source, dest, progress=progress, what=f"{row['name']}.pt")
  with open(dest, "rb") as f:
    head = f.read(512).lstrip().lower()
  if head.startswith((b"<!doctype html", b"<html")):
    dest.unlink()
    raise UserError(f"{source} sent a web page, not a checkpoint (Google Drive's quota or "
                    f"confirmation page); download it in a browser and put it at {dest}")
  return dest


def parity(net, row: dict, checkpoint_path, sizes: dict) -> dict:
  """Max |logit difference| between `net` and RobustBench's module loaded with the same file,
  on `PARITY_INPUTS` uniform random images; {"checked": False, ...} without robustbench."""
  from jax_abstain.porting import checkpoint, robustbench_torch  # pylint: disable=import-outside-toplevel
  reference = robustbench_torch.module(row, **sizes)
  if reference is None:
    return {"checked": False, "why": "robustbench is not installed"}
  torch = checkpoint._torch()  # pylint: disable=protected-access
  try:
    robustbench_torch.load_like_robustbench(
        reference, torch.load(checkpoint_path, map_location="cpu", weights_only=True))
  except RuntimeError as e:
    raise UserError(f"{checkpoint_path}: RobustBench's own module does not load it ({e})") from None
  x = np.random.default_rng(0).uniform(0, 1, (PARITY_INPUTS, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    ref = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  diff = float(np.abs(np.asarray(net(jnp.asarray(x))) - ref).max())
  scale = float(np.abs(ref).max())
  return {"checked": True, "inputs": PARITY_INPUTS, "max_abs_diff": diff, "max_abs_logit": scale,
          "relative": diff / max(scale, 1e-12), "tolerance": PARITY_RTOL}


def _cached(path: pathlib.Path, row: dict, sizes: dict):
  from jax_abstain import models  # pylint: disable=import-outside-toplevel
  if not (path / "manifest.json").is_file():
    return None
  rb = models.read_manifest(path).get("source", {}).get("robustbench", {})
  want = {"name": row["name"], "dataset": row["dataset"], "threat_model": row["threat_model"],
          "sizes": sizes}
  return models.load(path) if {k: rb.get(k) for k in want} == want else None


def load(name: str, dataset: str = "cifar10", threat_model: str = "Linf", model_dir=None, *,
         progress: bool = True, url: str | None = None, **sizes):
  """The eval-mode NNX model of RobustBench's `name` (see the module docstring).

  Args:
    name: RobustBench's model name (``Carmon2019Unlabeled``).
    dataset: ``cifar10`` or ``cifar100``.
    threat_model: ``Linf`` or ``L2``.
    model_dir: the folder of checkpoints and ports (default: the cache,
      ``$JAX_ABSTAIN_CACHE/models/robustbench``).
    progress: show the download's progress bar.
    url: download URL template with ``{id}`` (default ``$JAX_ABSTAIN_ROBUSTBENCH_URL`` or
      Google Drive's).
    **sizes: ``depth``/``widen_factor``/``width`` overrides, for small test checkpoints.

  Returns:
    The model (inputs NHWC in [0,1], logits out), in eval mode.

  Raises:
    UserError: unknown name, unsupported architecture, download problems, a checkpoint that
      does not match the architecture, or a parity error above `PARITY_RTOL`.
  """
  from jax_abstain import models, porting  # pylint: disable=import-outside-toplevel
  row = entry(name, dataset, threat_model)
  if status(row) != "native":
    raise UserError(refusal(row))
  bad = sorted(set(sizes) - {"depth", "widen_factor", "width"})
  if bad:
    raise UserError(f"load_robustbench: unknown options {', '.join(bad)}")
  out = folder(row, model_dir) / f"{row['name']}.jax"
  cached = _cached(out, row, sizes)
  if cached is not None:
    return cached
  ckpt = fetch_checkpoint(row, model_dir, progress=progress, url=url)
  key = _zoo().robustbench_key(row["name"], row["dataset"], row["threat_model"])
  net, options, source = porting.convert(key, ckpt, **sizes)
  check = parity(net, row, ckpt, sizes)
  if check["checked"] and not check["relative"] <= PARITY_RTOL:
    raise UserError(f"{row['name']}: the port differs from RobustBench's module by "
                    f"{check['max_abs_diff']:.3g} (logits up to {check['max_abs_logit']:.3g}); "
                    "nothing was cached")
  source["robustbench"] = {"name": row["name"], "dataset": row["dataset"],
                           "threat_model": row["threat_model"], "sizes": sizes,
                           "gdrive_id": row["gdrive_ids"][0], "model": row["model"],
                           "parity": check}
  models.save(net, out, arch=key, options=options, source=source, overwrite=True)
  return net


def manifest(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
             model_dir=None) -> dict:
  """The manifest of the cached port of `name` (after `load`).

  Raises:
    UserError: the model has not been loaded into `model_dir` yet.
  """
  from jax_abstain import models  # pylint: disable=import-outside-toplevel
  row = entry(name, dataset, threat_model)
  return models.read_manifest(folder(row, model_dir) / f"{row['name']}.jax")
