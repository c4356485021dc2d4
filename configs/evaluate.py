"""Evaluate a saved or ported model: natural accuracy and APGD-CE robustness at eps and 2 eps.

Run (a RobustBench checkpoint ported with `python -m jax_abstain.port`, on CIFAR-10):
    python -m jax_abstain.main \
        --config=configs/evaluate.py:model=models/carmon,data=cifar10,path=/data/cifar-10-python.tar.gz,eps=1/255 \
        --workdir=runs/eval_carmon
On the 5,000 MNIST digits (e.g. the model written by configs/mnist5k.py):
    python -m jax_abstain.main --config=configs/evaluate.py:model=runs/mnist_std/model,data=mnist5k,eps=0.1 \
        --workdir=runs/eval_mnist
Writes reports/<name>.csv (DESIGN.md format, resumable) and results.json; `conf=true` adds the
APGDconf column adv_conf@<2 eps> for softmax-response selectors (paper eq. 17).
Runtime: dominated by the attack, 40 APGD steps per radius on every sample still robust.
"""
import ml_collections

from jax_abstain import config_args, radii


def get_config(arg=None):
  arg = config_args.parse_arg(arg, model="", data="cifar10", path="", split="test", eps="1/255",
                              limit=0, name="model", n_iter=40, conf=False)
  config = ml_collections.ConfigDict()
  config.mode = "evaluate"
  config.name = arg.name
  config.seed = 0
  config.data = dict(name=arg.data, path=arg.path, split=arg.split, eval_limit=arg.limit)
  config.model = dict(dir=arg.model)
  double = radii.double_radius(arg.eps)
  config.eval = dict(radii=(arg.eps, double), conf_radii=(double,) if arg.conf else (),
                     norm="linf", n_iter=arg.n_iter, n_restarts=1, batch_size=500, seed=0)
  return config
