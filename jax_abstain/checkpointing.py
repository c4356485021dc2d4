"""orbax CheckpointManager wrapper: periodic saves, keep N, automatic resume.

    ckpt = checkpointing.Checkpointer(workdir / "checkpoints" / "era", keep=3)
    state, step = ckpt.restore_or(initial_state)        # latest complete step, or (initial, 0)
    ckpt.save(step, state); ckpt.close()

`state` is any pytree of arrays (NNX states as pure dicts, optax states, counters). A save
killed mid-write leaves a ``*.orbax-checkpoint-tmp`` folder that orbax ignores on restore, so a
crash never yields a half checkpoint. orbax silently skips a save at or below the latest step;
`save` turns that into an error, because it means two runs share a workdir.
"""
import logging as py_logging
import pathlib

import jax
import orbax.checkpoint as ocp
from absl import logging

from jax_abstain.errors import UserError


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
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state, *, wait: bool = False) -> None:
    latest = self._manager.latest_step()
    if latest is not None and step <= latest:
      raise UserError(f"checkpoint step {step} is not after the latest saved step {latest} in "
                      f"{self.directory}; is another run using this workdir?")
    self._manager.save(step, args=ocp.args.StandardSave(state))
    if wait:
      self._manager.wait_until_finished()

  def restore_or(self, initial_state):
    """Returns (state, step) of the latest complete checkpoint, or (initial_state, 0)."""
    step = self._manager.latest_step()
    if step is None:
      return initial_state, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial_state)
    try:
      state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f"checkpoint {self.directory}/{step} does not match this model/config "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return state, step

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
