"""Flax NNX architectures and the registry that names them.

    from jax_abstain import models
    net = models.create("mlp", num_classes=3, in_features=2)       # fresh weights
    logits = net(x)                                                # x in [0,1]
"""
from jax_abstain.models import mlp
from jax_abstain.models.registry import create, get, names, register

register("mlp", mlp.MLP, defaults=dict(in_features=2, hidden=(64, 64, 64)),
         family="mlp", input_kind="vector")

__all__ = ["create", "get", "names", "register"]
