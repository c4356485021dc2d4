"""python -m jax_abstain.main --config=configs/evaluate.py:model=models/carmon,data=cifar10,path=/data/cifar-10-python.tar.gz,eps=1/255 --workdir=runs/eval_carmon

Evaluate a saved or ported model (the command above: a RobustBench checkpoint ported with
`python -m jax_abstain.cli.port`, on CIFAR-10): natural accuracy and robustness at eps and 2 eps.
On the 5,000 MNIST digits (e.g. the model written by configs/mnist5k.py), with the APGDconf
column for softmax-response selectors:
    python -m jax_abstain.main \
        --config='configs/evaluate.py:model=runs/mnist_std/model,data=mnist5k,eps=0.05,radii=0.05;0.1;0.2,limit=500,n_iter=20,conf=true,batch_size=250,name=std' \
        --workdir=runs/eval_mnist_std
AutoAttack instead of APGD-CE for the is_rob columns (same column names):
    --config=configs/evaluate.py:...,attack=autoattack,aa_version=standard
More radii: ``radii=0.05;0.1;0.2`` (semicolons) replaces the default (eps, 2 eps).
Writes reports/<name>.csv (docs/design.md, Contracts; flushed per batch, resumable: a rerun
with the same workdir continues where it stopped and re-uses finished reports) and
results.json. `conf=true` adds adv_conf@<2 eps>, the max softmax at the APGDconf point (paper
eq. 17), for `python -m jax_abstain.cli.compose --selector softmax`. For randomized smoothing see
configs/evaluate_certified.py (the same job with ``eval.kind = "certified"``).
Runtime: dominated by the attack, n_iter APGD steps per radius on every sample still robust
(the MNIST command above, 3 radii + APGDconf: 7 minutes on 2 shared CPU cores).
"""
import ml_collections

from jax_abstain import radii
from jax_abstain.configs import common


def build(*, model: str, data: str, path: str, split: str, limit: int, name: str,
          evaluation: dict) -> ml_collections.ConfigDict:
  """An ``evaluate``-mode config: model directory `model` on `limit` evenly spaced samples
  (0 = all) of split `split` of data set `data`, report `name`, the ``eval`` section
  `evaluation` (`evaluation.EvalConfig` fields)."""
  config = ml_collections.ConfigDict()
  config.mode = "evaluate"
  config.name = name
  config.seed = 0
  config.data = dict(name=data, path=path, split=split, eval_limit=limit)
  config.model = dict(dir=model)
  config.eval = evaluation
  return config


def get_config(arg=None):
  arg = common.parse_arg(arg, model="", data="cifar10", path="", split="test", eps="1/255",
                         limit=0, name="model", n_iter=40, conf=False, attack="apgd-ce",
                         aa_version="standard", radii="", batch_size=500)
  double = radii.double_radius(arg.eps)
  return build(model=arg.model, data=arg.data, path=arg.path, split=arg.split, limit=arg.limit,
               name=arg.name, evaluation=dict(
                   kind="empirical", radii=common.radius_list(arg.radii) or (arg.eps, double),
                   conf_radii=(double,) if arg.conf else (), norm="linf", n_iter=arg.n_iter,
                   n_restarts=1, batch_size=arg.batch_size, seed=0, attack=arg.attack,
                   # Options of attacks.autoattack, used when attack == "autoattack".
                   autoattack=dict(version=arg.aa_version)))
