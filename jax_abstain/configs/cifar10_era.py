"""python -m jax_abstain.main --config=configs/cifar10_era.py:init=models/gowal,path=/data/cifar-10-python.tar.gz --workdir=runs/c10_era

ERA fine-tuning on CIFAR-10 (paper section 7, appendix A.2): a robust RobustBench model,
50 epochs, SGD lr 1e-3 (x0.1 from epoch 38), batch 200, 10-step PGD at eps = 2/255 (the
branch of a composition selected at 2 eps for threat 1/255 is trained at 2 eps, docs/design.md,
appendix A6), beta 1.0, TRADES beta 6, crop + flip augmentation (``augment=autoaugment`` for the
AutoAugment variant). Model selection: the checkpoint of lowest robust inaccuracy on 2,000
held-out training images, every 5 epochs (``selection=test_slice`` validates on the first
test images like the authors). Evaluation: APGD-CE (40 steps) at eps and 2 eps on the test set.
Port the starting model first (RobustBench checkpoint file, no download here):
    python -m jax_abstain.cli.port --arch Gowal2020Uncovering_28_10_extra --checkpoint Gowal.pt --out models/gowal
Authors' code semantics (one CE-PGD point for both terms, KL averaged over classes):
``variant=code``. Pareto front: one run per ``beta`` (``...:init=models/gowal,beta=0.5``),
composed and plotted with ``python -m jax_abstain.cli.report``.
Runtime: 50 epochs x 250 steps of ~30 forward/backward passes of a WRN-28-10; a GPU job.
"""
from jax_abstain.configs import common
from jax_abstain.configs import recipe


def get_config(arg=None):
  arg = common.parse_arg(arg, **recipe.arguments(
      loss="era", data="cifar10", num_classes=10, arch="Gowal2020Uncovering_28_10_extra",
      eps="2/255", threat="1/255"))
  return recipe.finetune(arg)
