"""Flax NNX architectures, the registry that names them, and model directories.

    from jax_abstain import models
    net = models.create("mlp", num_classes=3, in_features=2)       # fresh weights
    net = models.create("Carmon2019Unlabeled")                      # WRN-28-10 topology
    net = models.load("ported/carmon")                              # eval-mode, ported weights
    net = models.load_robustbench("Carmon2019Unlabeled", dataset="cifar10", threat_model="Linf")
    logits = net(x)                                                 # x NHWC in [0,1]

Every image model carries its own input normalization, so inputs are always NHWC float32 in
[0,1]. Train/eval mode (BatchNorm statistics, dropout) is NNX's: ``net.train()`` before a
training step (BN normalises with batch statistics and updates its running averages by
PyTorch's rule, `layers.BatchNorm`, which mutates the model's ``nnx.BatchStat`` state),
``net.eval()`` for evaluation and attacks (BN uses running statistics, the forward pass is a
pure function of the input). `create` returns
train mode, `load` eval mode. Under ``jax.jit`` carry the model as ``nnx.split(net)`` ->
(graphdef, state); the mode is part of the graphdef, so split after switching.
"""
from jax_abstain.models import mlp, zoo
from jax_abstain.models.io import load, read_manifest, save
from jax_abstain.models.registry import create, get, names, register, resolve

register("mlp", mlp.MLP, defaults=dict(in_features=2, hidden=(64, 64, 64)),
         family="mlp", input_kind="vector")
zoo.register_all()


def load_robustbench(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
                     model_dir=None, *, progress: bool = True, **kwargs):
  """RobustBench's model `name` as an eval-mode NNX model: downloaded, ported and checked
  against RobustBench's module on first use, then loaded from the cache
  (`jax_abstain.porting.robustbench.load`, which documents the arguments)."""
  from jax_abstain.porting import robustbench  # pylint: disable=import-outside-toplevel
  return robustbench.load(name, dataset, threat_model, model_dir, progress=progress, **kwargs)


def robustbench_manifest(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
                         model_dir=None) -> dict:
  """The manifest of the cached port of RobustBench's `name` (source file sha256, how it was
  unwrapped, parity error against RobustBench's module; `porting.robustbench.manifest`)."""
  from jax_abstain.porting import robustbench  # pylint: disable=import-outside-toplevel
  return robustbench.manifest(name, dataset, threat_model, model_dir)


__all__ = ["create", "get", "load", "load_robustbench", "names", "read_manifest", "register",
           "resolve", "robustbench_manifest", "save"]
