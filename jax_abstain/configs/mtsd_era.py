"""python -m jax_abstain.main --config=configs/mtsd_era.py:init=models/mtsd_r50,path=mtsd_cls,num_classes=400 --workdir=runs/mtsd_era

ERA fine-tuning on the Mapillary Traffic Sign Dataset (paper Table 1, ResNet-50 at 2/255):
64x64 crops written by ``python -m jax_abstain.data.mtsd --src ... --out mtsd_cls``; set
``num_classes`` to the number of labels in mtsd_cls/label_map.json. The recipe of
configs/cifar10_era.py with crop + rotation (15 degrees) augmentation (``augment=stdaug``
adds colour jitter and affine moves), trained at 2 eps = 4/255 for robust selection at 2 eps.
The paper says lr 1e-3; the authors' script uses 5e-3 (``lr=5e-3``) and sweeps beta over
5.0, 1.0, 0.5, 0.1. The base model (``init``, required) is a ResNet-50 trained on the same crops,
e.g. from scratch with TRADES: ``loss=trades,arch=resnet50,schedule=trades_scratch``.
Runtime: a GPU job (ResNet-50 at 64x64, ~30 passes per step).
"""
from jax_abstain.configs import common
from jax_abstain.configs import recipe


def get_config(arg=None):
  arg = common.parse_arg(arg, **recipe.arguments(
      loss="era", data="mtsd", num_classes=400, eps="4/255",
      threat="2/255", augment="crop_rotate"))
  return recipe.finetune(arg)
