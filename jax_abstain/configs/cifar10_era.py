"""python -m jax_abstain.main --config=configs/cifar10_era.py --workdir=runs/c10_era

The paper's headline job on CIFAR-10 (Table 1, Fig. 2-4), from nothing: downloads CIFAR-10
and the RobustBench model Carmon2019Unlabeled (Linf leaderboard, WRN-28-10), fine-tunes an
ERA branch from it, evaluates branch and core, composes them and writes the tables and plots.
Recipe (paper section 7, appendix A.2): 50 epochs, SGD lr 1e-3 (x0.1 from epoch 38), batch
200, 10-step PGD at eps = 2/255 (the branch of a composition selected at 2 eps for threat
1/255 is trained at 2 eps, docs/design.md, appendix A6), beta 1.0, TRADES beta 6, crop + flip
augmentation (``augment=autoaugment`` for the AutoAugment variant). Model selection: the
checkpoint of lowest robust inaccuracy on 2,000 held-out training images, every 5 epochs
(``selection=test_slice`` validates on the first test images like the authors). Evaluation:
APGD-CE (40 steps) at eps and 2 eps on the test set, for the branch and the core; composition
at eps = 1/255 selected by the branch's robustness at 2 eps (Table 1 row in table1.md, Fig. 2-4
and the other tables in report/).
Arguments: ``start`` (the RobustBench model fine-tuned, e.g. Gowal2020Uncovering_28_10_extra)
or ``init`` (a model directory, e.g. ported with python -m jax_abstain.port); ``core`` (a
RobustBench name) or ``core_dir``; ``path`` (a local copy of cifar-10-python.tar.gz).
Authors' code semantics (one CE-PGD point for both terms, KL averaged over classes):
``variant=code``. Pareto front: one run per ``beta`` (``...:beta=0.5``), composed and plotted
with ``python -m jax_abstain.cli.report``.
Runtime: 50 epochs x 250 steps of ~30 forward/backward passes of a WRN-28-10; a GPU job.
"""
from jax_abstain.configs import common
from jax_abstain.configs import recipe


def get_config(arg=None):
  arg = common.parse_arg(arg, **recipe.arguments(
      loss="era", data="cifar10", num_classes=10, start="Carmon2019Unlabeled",
      core="Carmon2019Unlabeled", eps="2/255", threat="1/255"))
  return recipe.finetune(arg)
