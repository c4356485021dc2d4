"""python -m jax_abstain.main --config=configs/cifar10_cra.py:init=models/cohen012 --workdir=runs/c10_cra

CRA fine-tuning on CIFAR-10 for randomized smoothing (paper section 4.2, eq. 7-9, Table 2):
a Gaussian-noise-trained base model (sigma 0.12), 50 epochs, SGD lr 1e-3 (x0.1 from epoch
38), batch 200 (the authors' script: 50, ``batch=50``), k = 16 noise copies per image, Gamma
4, beta 1.0 (the authors' script: 0.75 decayed x0.1 at epochs 20 and 40,
``beta=0.75,beta_decay_every=20``),
certified radius eps = 0.25 (L2), train-mode BN. ``variant=code`` gives the authors' loss (CE of
noise-averaged logits, radius of the top-2 smoothed classes), ``paper`` eq. 8-9 as printed
(README, "Known issue"). Model selection: lowest validation robust inaccuracy under 40-step
L2 PGD at eps on the base model (a cheap proxy; the authors keep the epoch-45 model:
``select_every=0``). Evaluation: CERTIFY (N0 100, N 100,000, alpha 0.001) on 500 evenly
spaced test images at eps and 2 eps.
Base model (required: no RobustBench leaderboard holds it, and the job refuses to start from
random weights): Cohen et al.'s noise-trained cifar-resnet110, ported with
``python -m jax_abstain.cli.port --arch cifar-resnet110 --checkpoint noise_0.12.pth.tar
--out models/cohen012`` and passed as ``init``. CIFAR-10 is downloaded unless ``path`` is given.
Runtime: 16 noisy copies per image make a step ~16x a standard one; certification of 500
images takes 500 x 100,000 forward passes (a GPU job).
"""
from jax_abstain.configs import common
from jax_abstain.configs import recipe


def get_config(arg=None):
  arg = common.parse_arg(arg, **recipe.arguments(
      loss="cra", data="cifar10", num_classes=10, eps="0.25", norm="l2",
      sigma=0.12, variant="code", eval_limit=500))
  return recipe.finetune(arg)
