"""python -m jax_abstain.main --config=configs/evaluate_certified.py:model=runs/cifar_cra/model,data=cifar10,path=/data/cifar-10-python.tar.gz,sigma=0.12,limit=500 --workdir=runs/cert_cra

Certified evaluation (randomized smoothing, CERTIFY of Cohen et al.) of a saved model: the
evaluate job of configs/evaluate.py with ``eval.kind = "certified"``. The command above is the
paper's setting: sigma 0.12, n0 100, n 100 000, alpha 0.001, first 500 test images.
A fast CPU check on MNIST digits (fewer noise samples, looser radii):
    python -m jax_abstain.main \
        --config=configs/evaluate_certified.py:model=runs/mnist_std/model,data=mnist5k,sigma=0.25,limit=50,n=1000 \
        --workdir=runs/cert_mnist
Writes reports/<name>.csv with the columns sample_idx,label,pred,is_acc,conf,cert_pred,radius
(cert_pred -1 = abstain, radius in L2; resumable, one row flushed per sample) and results.json
with cert_acc, cert_inacc, commit_rate and commit_prec at each L2 radius in ``radii``
(default sigma and 2 sigma; semicolons separate radii). For attack columns as well, run
configs/evaluate.py into another workdir. Compose with `python -m jax_abstain.cli.compose
--models CERT.csv CORE.csv --eps 0.25` (selection: certified radius >= eps).
Runtime: n forward passes per image (100 000 x 500 CIFAR-10 images is GPU work).
"""
from jax_abstain import radii as radii_lib
from jax_abstain.configs import common, evaluate


def get_config(arg=None):
  arg = common.parse_arg(arg, model="", data="cifar10", path="", split="test", limit=500,
                         name="model", sigma=0.12, n0=100, n=100_000, alpha=0.001,
                         batch_size=1000, radii="")
  cert_radii = common.radius_list(arg.radii) or (
      radii_lib.format_radius(arg.sigma), radii_lib.format_radius(2 * arg.sigma))
  return evaluate.build(model=arg.model, data=arg.data, path=arg.path, split=arg.split,
                        limit=arg.limit, name=arg.name, evaluation=dict(
                            kind="certified", radii=cert_radii, norm="l2", sigma=arg.sigma,
                            n0=arg.n0, n=arg.n, alpha=arg.alpha,
                            noise_batch_size=arg.batch_size, seed=0))
