"""python -m jax_abstain.main --config=configs/cifar100_era.py --workdir=runs/c100_era

ERA on CIFAR-100 (paper Table 1, WideResNet-28-10 at 2/255), from nothing: the job of
configs/cifar10_era.py with CIFAR-100 (downloaded) and the RobustBench CIFAR-100 Linf model
Rebuffi2021Fixing_28_10_cutmix_ddpm as start and core, the branch trained at 2 eps = 4/255
for robust selection at 2 eps. The paper says lr 1e-3; the authors' script uses 5e-4
(``lr=5e-4``). With the authors' ``variant=code`` the TRADES KL is averaged over the 100
classes (effective beta_T 0.06). ``start``/``init``, ``core``/``core_dir`` and ``path`` as in
configs/cifar10_era.py.
Runtime: as configs/cifar10_era.py (a GPU job).
"""
from jax_abstain.configs import common
from jax_abstain.configs import recipe


def get_config(arg=None):
  arg = common.parse_arg(arg, **recipe.arguments(
      loss="era", data="cifar100", num_classes=100, start="Rebuffi2021Fixing_28_10_cutmix_ddpm",
      core="Rebuffi2021Fixing_28_10_cutmix_ddpm", eps="4/255", threat="2/255"))
  return recipe.finetune(arg)
