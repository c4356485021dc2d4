"""python -m jax_abstain.main --config=configs/cifar10_trades.py --workdir=runs/c10_trades

TRADES fine-tuning on CIFAR-10, the paper's baseline (appendix A.2), from nothing: CIFAR-10
and the RobustBench model Carmon2019Unlabeled (start and core) are downloaded, the TRADES
branch, trained at 2 eps = 2/255 like the ERA branch so that the two compositions compare
(``eps=1/255`` trains at the threat radius), is composed with the core at threat 1/255 as in
configs/cifar10_era.py (the same ``start``/``init``, ``core``/``core_dir``, ``path``
arguments). 50 epochs, SGD lr 1e-3
(x0.1 from epoch 38), batch 200 (the authors' scripts use their default 100: ``batch=100``),
10-step KL-PGD, TRADES beta 6 with the standard batch-mean KL, train-mode BN for the update
and eval mode inside the attack (docs/design.md, appendix A1), crop + flip. Model selection: the
checkpoint of highest validation robust accuracy (2,000 held-out training images, every 5
epochs; ``selection=test_slice`` for the authors' test slice). Evaluation: APGD-CE at eps
and 2 eps. Runtime: as configs/cifar10_era.py, about half of its attack cost.
"""
from jax_abstain.configs import common
from jax_abstain.configs import recipe


def get_config(arg=None):
  arg = common.parse_arg(arg, **recipe.arguments(
      loss="trades", data="cifar10", num_classes=10, start="Carmon2019Unlabeled",
      core="Carmon2019Unlabeled", eps="2/255", threat="1/255"))
  config = recipe.finetune(arg)
  config.train.bn_mode_attack = "eval"   # the authors attack in eval mode, then train mode
  return config
