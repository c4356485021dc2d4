"""orbax CheckpointManager wrapper: periodic saves, keep N, automatic resume.

    ckpt = checkpointing.Checkpointer(workdir / "checkpoints" / "era", keep=3)
    state, step = ckpt.restore_or(initial_state)        # latest complete step, or (initial, 0)
    ckpt.save(step, state, data_state=pipeline.get_state(iterator)); ckpt.close()
    iterator = pipeline.restore(loader, ckpt.data_state(step))

`state` is any pytree of arrays (NNX states as pure dicts, optax states, counters, RNG key
data). `data_state` is the grain iterator position (a string); grain's orbax handler stores
one file per JAX process (``process_<i>-of-<n>.json``), so every host resumes its own shard.
A save killed mid-write leaves a ``*.orbax-checkpoint-tmp`` folder that orbax ignores on
restore, so a crash never yields a half checkpoint. orbax silently skips a save at or below
the latest step; `save` turns that into an error, because it means two runs share a workdir.
"""
import logging as py_logging
import pathlib

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from jax_abstain.errors import UserError


class _IteratorState:
  """What grain's checkpoint handler needs of an iterator: ``get_state`` on save (the state
  taken when `save` was called, not when an async write runs) and ``set_state`` on restore."""

  def __init__(self, state=None):
    self.state = state

  def get_state(self):
    return self.state.encode()

  def set_state(self, state):
    self.state = state.decode()

  def start_prefetch(self):
    pass


class _DropOrbaxInfo(py_logging.Filter):
  """orbax logs every save phase at INFO through absl; keep only its warnings and errors."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def quiet_orbax_logs() -> None:
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DropOrbaxInfo) for f in handler.filters):
    handler.addFilter(_DropOrbaxInfo())
  py_logging.getLogger("absl").addFilter(_DropOrbaxInfo())


class Checkpointer:
  """Saves and restores one pytree under `directory` (steps are sub-folders)."""

  def __init__(self, directory, *, keep: int = 3):
    self.directory = pathlib.Path(directory).absolute()
    quiet_orbax_logs()
    # Managers of one process need their own barrier names in a multi-process job: orbax's
    # defaults collide ("Barrier ... is already ongoing") when two of them save at once.
    multiprocessing = ocp.options.MultiprocessingOptions(
        barrier_sync_key_prefix=self.directory.name)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, multiprocessing_options=multiprocessing))

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step: int, state, *, data_state: str | None = None, metrics=None,
           wait: bool = False) -> None:
    """Saves `state` (and the data iterator position) as `step`; `metrics` go to orbax's
    per-step metadata."""
    latest = self._manager.latest_step()
    if latest is not None and step <= latest:
      raise UserError(f"checkpoint step {step} is not after the latest saved step {latest} in "
                      f"{self.directory}; is another run using this workdir?")
    items = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      items["data"] = grain.checkpoint.CheckpointSave(_IteratorState(data_state))
    self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)
    if wait:
      self._manager.wait_until_finished()

  def delete_after(self, step: int) -> None:
    """Deletes saved steps above `step` (a resumed run re-creates them)."""
    for s in self._manager.all_steps():
      if s > step:
        self._manager.delete(s)

  def restore_or(self, initial_state, step: int | None = None):
    """Returns (state, step) of checkpoint `step` (default: the latest complete one), or
    (initial_state, 0) when there is none."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      return initial_state, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial_state)
    try:
      state = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f"checkpoint {self.directory}/{step} does not match this model/config "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return state, step

  def data_state(self, step: int) -> str:
    """The data iterator position saved with `step` (this process's file)."""
    holder = _IteratorState()
    try:
      self._manager.restore(
          step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(holder)))
    except (ValueError, KeyError, FileNotFoundError) as e:
      raise UserError(f"checkpoint {self.directory}/{step} has no data iterator state for this "
                      f"process ({str(e).splitlines()[0][:200]}); was it written with another "
                      "number of processes?") from None
    return holder.state

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
