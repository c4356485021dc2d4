"""Multi-host set-up and host-local -> global arrays for the data-parallel step.

    distributed.initialize("10.0.0.1:1234", num_processes=4, process_id=rank)  # every host
    distributed.initialize("auto")          # SLURM / Open MPI / Kubernetes / Cloud TPU detection
    xb = distributed.global_batch(mesh, local_images)   # [global B, ...] sharded over "data"
    xv = distributed.replicated_rows(mesh, x_val)       # every host holds all rows

`initialize` must run before anything touches a JAX device. Without arguments it reads the
environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), so a
launcher can configure hosts without changing the config (`jobs.workdir.prepare` refuses a run
whose config differs between restarts, and hosts would differ in ``process_id``). On CPU the
cross-process collectives go through gloo (jax's default
``jax_cpu_collectives_implementation``).
"""
import os

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from jax_abstain.errors import UserError

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1):
  """Joins a multi-process JAX job; returns True if one was joined.

  Args:
    coordinator_address: ``host:port`` of process 0, ``"auto"`` for jax's cluster detection,
      or "" to use the environment variables `ENV` (nothing set: single process).
    num_processes: number of processes (hosts); 0 takes ``JAX_NUM_PROCESSES``.
    process_id: this process's rank in [0, num_processes); -1 takes ``JAX_PROCESS_ID``.
  """
  address = coordinator_address or os.environ.get(ENV[0], "")
  if not address:
    return False
  if address == "auto":
    jax.distributed.initialize()
  else:
    try:
      n = int(num_processes or os.environ.get(ENV[1], 0))
      rank = int(process_id if process_id >= 0 else os.environ.get(ENV[2], -1))
    except ValueError:
      raise UserError(f"{ENV[1]} and {ENV[2]} must be integers") from None
    if n < 1 or not 0 <= rank < n:
      raise UserError(f"distributed: expected num_processes >= 1 and 0 <= process_id < "
                      f"num_processes, got {n} and {rank} (flags or {ENV[1]}/{ENV[2]})")
    jax.distributed.initialize(address, num_processes=n, process_id=rank)
  logging.info("process %d of %d, %d local of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def global_batch(mesh, local: np.ndarray) -> jax.Array:
  """The global array whose rows are every process's `local` rows, in process order,
  sharded over the ``data`` axis. local: [B / num_processes, ...] on each process."""
  return jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)


def replicated_rows(mesh, rows: np.ndarray) -> jax.Array:
  """`rows` (identical on every process) sharded over ``data``; rows % devices == 0."""
  sharding = NamedSharding(mesh, P("data"))
  return jax.make_array_from_callback(rows.shape, sharding, lambda index: rows[index])


def replicate(mesh, tree):
  """Puts a pytree of arrays (identical on every process) on every device; typed PRNG keys
  (e.g. dropout streams in the model state) travel as their key data."""
  sharding = NamedSharding(mesh, P())

  def put(a):
    if jax.dtypes.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(a)), impl=jax.random.key_impl(a))
    a = np.asarray(jax.device_get(a))
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

  return jax.tree.map(put, tree)


def wait_for_all(name: str) -> None:
  """Barrier across processes (no-op for one): `jax.experimental.multihost_utils`'s
  ``sync_global_devices``, a public collective over every device. For short waits only
  (checkpoint bookkeeping); the evaluation's long wait is a file handshake
  (`evaluation.hosts`)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)
