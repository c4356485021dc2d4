"""Registry entries: architecture ids and RobustBench model names -> constructor + metadata.

    from jax_abstain import models
    models.names()                          # ['Carmon2019Unlabeled', ..., 'wrn-28-10', ...]
    models.get("Carmon2019Unlabeled").metadata
    # {'family': 'wide_resnet', 'dataset': 'cifar10', 'threat_model': 'Linf', ...}
    net = models.create("Gowal2020Uncovering_28_10_extra")   # fresh weights, right topology

A RobustBench name fixes the exact topology of its checkpoint (e.g. the unused ``sub_block1``
of Carmon2019Unlabeled) and its input normalization. The RobustBench entries are registered
from ``robustbench_table.json`` (generated from RobustBench's zoo files by
`jax_abstain.porting.robustbench_zoo`), every entry whose architecture is in `FAMILIES`, under
`robustbench_key` (the name for CIFAR-10 Linf, ``dataset/threat_model/name`` otherwise); load
one with ``models.load_robustbench(name, dataset, threat_model)`` or port a file with
``jax-abstain-port --arch NAME --checkpoint FILE.pt --out DIR``. The metadata of each entry:
``family``, ``dataset``, ``num_classes`` (in the defaults), ``normalization`` (human-readable;
the exact values live in the model), ``threat_model``, ``source`` and, for RobustBench entries,
``robustbench`` (the name), ``gdrive_ids`` and ``checkpoint_key``.
"""
import functools
import json
import pathlib

from jax_abstain.models import layers
from jax_abstain.models.cifar_resnet import CifarResNet
from jax_abstain.models.dm_preact_resnet import DMPreActResNet
from jax_abstain.models.dm_wide_resnet import DMWideResNet
from jax_abstain.models.registry import register
from jax_abstain.models.resnet import ImageNetResNet, PreActResNet, ResNet
from jax_abstain.models.small_cnn import GowalSmallCNN, SmallCNN
from jax_abstain.models.wide_resnet import WideResNet

_C10 = dict(dataset="cifar10", input_shape=(32, 32, 3))
_C100 = dict(dataset="cifar100", input_shape=(32, 32, 3))
_RB = "RobustBench model_zoo/architectures/"


def _register_architectures():
  for depth, k in ((10, 1), (16, 2), (16, 4), (16, 8), (28, 4), (28, 10), (34, 10), (34, 20),
                   (70, 16)):
    register(f"wrn-{depth}-{k}", WideResNet, defaults=dict(depth=depth, widen_factor=k, num_classes=10),
             family="wide_resnet", normalization="none (inputs in [0,1])",
             source=_RB + "wide_resnet.py", **_C10)
  for depth, k in ((10, 1), (28, 10), (34, 10), (70, 16)):
    register(f"dm-wrn-{depth}-{k}", DMWideResNet,
             defaults=dict(depth=depth, width=k, activation="swish",
                           mean=layers.CIFAR10_MEAN, std=layers.CIFAR10_STD, num_classes=10),
             family="dm_wide_resnet",
             normalization="CIFAR-10 mean/std (buffers absent from the files)",
             source=_RB + "dm_wide_resnet.py", **_C10)
  register("resnet18", ResNet, defaults=dict(blocks=(2, 2, 2, 2), num_classes=10), family="resnet",
           normalization="none (inputs in [0,1])", source=_RB + "resnet.py", **_C10)
  register("resnet50", ResNet, defaults=dict(blocks=(3, 4, 6, 3), bottleneck=True, num_classes=10),
           family="resnet", normalization="none (inputs in [0,1])", source=_RB + "resnet.py",
           **_C10)
  register("preact-resnet18", PreActResNet,
           defaults=dict(blocks=(2, 2, 2, 2), mean=layers.CIFAR10_MEAN, std=layers.CIFAR10_STD,
                         num_classes=10),
           family="preact_resnet", normalization="CIFAR-10 mean/std",
           source=_RB + "resnet.py (PreActResNet18)", **_C10)
  register("resnet50-imagenet", ImageNetResNet, defaults=dict(blocks=(3, 4, 6, 3), num_classes=1000),
           family="imagenet_resnet", normalization="ImageNet mean/std", dataset="imagenet",
           input_shape=(224, 224, 3), source="torchvision.models.resnet50")
  for depth in (20, 110):
    register(f"cifar-resnet{depth}", CifarResNet, defaults=dict(depth=depth, num_classes=10),
             family="cifar_resnet", normalization="Cohen et al. CIFAR-10 mean/std",
             source="locuslab/smoothing code/archs/cifar_resnet.py", **_C10)
  register("small-cnn", SmallCNN, defaults=dict(num_classes=10, in_channels=1),
           family="small_cnn", normalization="none (inputs in [0,1])", dataset="mnist",
           input_shape=(28, 28, 1), source="yaodongyu/TRADES models/small_cnn.py")
  register("gowal-small", GowalSmallCNN, defaults=dict(num_classes=10, in_channels=1),
           family="small_cnn", normalization="none (inputs in [0,1])", dataset="mnist",
           input_shape=(28, 28, 1), source="Gowal et al. 2018, table 1 (small)")


FAMILIES = {"wide_resnet": WideResNet, "dm_wide_resnet": DMWideResNet, "resnet": ResNet,
            "preact_resnet": PreActResNet, "dm_preact_resnet": DMPreActResNet}


def robustbench_key(name: str, dataset: str = "cifar10", threat_model: str = "Linf") -> str:
  """The registry name of a RobustBench entry: its own name for CIFAR-10 Linf (RobustBench's
  defaults), ``dataset/threat_model/name`` otherwise (the same name may be another model)."""
  if (dataset, threat_model) == ("cifar10", "Linf"):
    return name
  return f"{dataset}/{threat_model}/{name}"


def _tuples(value):
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


@functools.cache
def robustbench_table() -> dict:
  """The shipped RobustBench table (``robustbench_table.json`` beside this file, generated
  from RobustBench's zoo files by `jax_abstain.porting.robustbench_zoo`)."""
  return json.loads((pathlib.Path(__file__).parent / "robustbench_table.json").read_text())


def robustbench_rows() -> list[dict]:
  """The table's leaderboard entries, one dict each (the fields of
  `jax_abstain.porting.robustbench_zoo.Row`; lists read back as tuples)."""
  table = robustbench_table()
  return [dict(zip(table["fields"], _tuples(row))) for row in table["rows"]]


def _register_robustbench():
  """Every entry of the table whose architecture the Flax zoo builds."""
  for row in robustbench_rows():
    if not row["family"]:
      continue
    register(robustbench_key(row["name"], row["dataset"], row["threat_model"]),
             FAMILIES[row["family"]], defaults=row["options"], family=row["family"],
             normalization=row["normalization"], threat_model=row["threat_model"],
             robustbench=row["name"], gdrive_ids=row["gdrive_ids"],
             checkpoint_key=row["checkpoint_key"],
             source=f"RobustBench {row['dataset']} {row['threat_model']} {row['name']}: "
                    f"{row['model']}", **(_C100 if row["dataset"] == "cifar100" else _C10))


def register_all():
  _register_architectures()
  _register_robustbench()
