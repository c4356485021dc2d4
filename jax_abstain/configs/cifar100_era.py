"""python -m jax_abstain.main --config=configs/cifar100_era.py:init=models/rebuffi100,path=/data/cifar-100-python.tar.gz --workdir=runs/c100_era

ERA fine-tuning on CIFAR-100 (paper Table 1, WideResNet-28-10 at 2/255): the recipe of
configs/cifar10_era.py with 100 classes and the Rebuffi et al. RobustBench model, trained at
2 eps = 4/255 for robust selection at 2 eps. The paper says lr 1e-3; the authors' script uses
5e-4 (``lr=5e-4``). With the authors' ``variant=code`` the TRADES KL is averaged over the 100
classes (effective beta_T 0.06). Port first:
    python -m jax_abstain.cli.port --arch cifar100/Linf/Rebuffi2021Fixing_28_10_cutmix_ddpm --checkpoint R.pt --out models/rebuffi100
Runtime: as configs/cifar10_era.py (a GPU job).
"""
from jax_abstain.configs import common
from jax_abstain.configs import recipe


def get_config(arg=None):
  arg = common.parse_arg(arg, **recipe.arguments(
      loss="era", data="cifar100", num_classes=100, arch="cifar100/Linf/Rebuffi2021Fixing_28_10_cutmix_ddpm",
      eps="4/255", threat="2/255"))
  return recipe.finetune(arg)
