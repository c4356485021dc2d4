"""The text of ``jax-abstain-port --list``: which RobustBench names load, and how; the other
registry names with their normalisation.

    print(listing.render("cifar10", "Linf"))

Per leaderboard (data set and threat model) a count line, then one line per entry: "native"
(a Flax architecture of `jax_abstain.models`, loaded by ``--robustbench NAME``), "generic"
(a torch-to-JAX path; none here: torchax does not import with the installed PyTorch) or "not"
(refused by name, with the reason). Each line shows the architecture and the input
normalisation the model carries.
"""
from jax_abstain.errors import UserError

_RESNETS = {((2, 2, 2, 2), False): "ResNet-18", ((3, 4, 6, 3), True): "ResNet-50"}


def architecture(family: str, o: dict) -> str:
  """A short name of the architecture of `family` with options `o` (``WRN-28-10``)."""
  if family == "wide_resnet":
    return f"WRN-{o['depth']}-{o['widen_factor']}" + (" +sub_block1" if o["sub_block1"] else "")
  if family == "dm_wide_resnet":
    return f"DM-WRN-{o['depth']}-{o['width']} {o['activation']}"
  if family == "dm_preact_resnet":
    return f"DM-PreAct-ResNet-{o['depth']} {o['activation']}"
  if family == "resnet":
    return _RESNETS.get((tuple(o["blocks"]), o["bottleneck"]), f"ResNet {tuple(o['blocks'])}")
  if family == "preact_resnet":
    return "PreAct ResNet-18" if tuple(o["blocks"]) == (2, 2, 2, 2) else "PreAct ResNet"
  return family


def _boards(rows, dataset, threat_model):
  boards = sorted({(r["dataset"], r["threat_model"]) for r in rows},
                  key=lambda b: (b[0], b[1] != "Linf"))
  picked = [b for b in boards if dataset in (None, b[0])
            and (threat_model is None or b[1].lower() == str(threat_model).lower())]
  if not picked:
    wanted = " ".join(str(v) for v in (dataset, threat_model) if v is not None)
    raise UserError(f"--list: no RobustBench leaderboard for {wanted}; there are "
                    + ", ".join(f"{d} {t}" for d, t in boards))
  return picked


def render(dataset=None, threat_model=None) -> str:
  """The listing, for one data set and/or threat model (None: all)."""
  from jax_abstain import models  # pylint: disable=import-outside-toplevel
  from jax_abstain.models import zoo  # pylint: disable=import-outside-toplevel
  rows = zoo.robustbench_rows()
  lines = [f"RobustBench {zoo.robustbench_table()['robustbench_version']} models by name "
           "(--robustbench NAME --dataset D --threat-model T). native: ported to a Flax "
           "architecture; generic: through torchax (none: torchax does not import with the "
           "installed PyTorch); not: refused, with the reason."]
  fmt = "  {:44s} {:7s} {:26s} {}"
  for ds, threat in _boards(rows, dataset, threat_model):
    board = [r for r in rows if (r["dataset"], r["threat_model"]) == (ds, threat)]
    native = sum(bool(r["family"]) for r in board)
    lines += ["", f"{ds} {threat}: {native} native, 0 generic, {len(board) - native} not "
              f"({len(board)} entries)", fmt.format("NAME", "LOADS", "ARCHITECTURE",
                                                     "NORMALISATION / WHY NOT")]
    for r in board:
      lines.append(fmt.format(r["name"], "native" if r["family"] else "not",
                              architecture(r["family"], r["options"]) if r["family"] else "-",
                              r["normalization"] if r["family"] else r["reason"]).rstrip())
  if dataset is None and threat_model is None:
    lines += ["", "Architectures (--arch NAME --checkpoint FILE)", fmt.format(
        "NAME", "DATASET", "FAMILY", "NORMALISATION")]
    for name in models.names():
      meta = models.get(name).metadata
      if not meta.get("robustbench"):
        lines.append(fmt.format(name, meta.get("dataset", ""), meta.get("family", ""),
                                meta.get("normalization", "")))
  return "\n".join(lines)
