"""The devices of one evaluating process: a ``("data",)`` mesh of the local devices, batches
split over it, the model replicated on it (evaluation and randomized smoothing).

    mesh = devices.local_mesh()                     # every device of this process
    rows = devices.padded_rows(500, mesh)           # 500 rounded up to a multiple of the devices
    xb = devices.split_rows(mesh, x)                # [B, ...] sharded over "data"
    state = devices.replicate(mesh, state)          # weights on every device

The mesh is the training step's layout (`training.step.data_mesh`: batch sharded, parameters
replicated) restricted to this process's devices: in a multi-host job every process evaluates
its own range of samples (`evaluation.hosts`) with no collective across hosts, so a slow or
restarted host never blocks the others inside a computation. Every per-sample quantity is
computed row by row (per-sample keys ``fold_in(key, sample_idx)``, docs/design.md,
Contracts), so the rows do not depend on how the batch is split.
"""
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def local_mesh(devices=None) -> Mesh:
  """A ``("data",)`` mesh of `devices` (default: every device of this process)."""
  return Mesh(np.asarray(jax.local_devices() if devices is None else devices), ("data",))


def padded_rows(rows: int, mesh: Mesh) -> int:
  """`rows` rounded up to a multiple of the mesh's devices (the compiled batch)."""
  return int(math.ceil(rows / mesh.size) * mesh.size)


def split_rows(mesh: Mesh, a) -> jax.Array:
  """`a` [B, ...] (B a multiple of the devices; PRNG key arrays too) sharded over ``data``."""
  return jax.device_put(a, NamedSharding(mesh, P("data")))


def replicate(mesh: Mesh, tree):
  """Every array of the pytree `tree` on every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, P()))
