"""orbax CheckpointManager wrapper: periodic saves, keep N, automatic resume.

    ckpt = checkpointing.Checkpointer(workdir / "checkpoints" / "era", keep=3)
    state, step = ckpt.restore_or(initial_state)        # newest intact step, or (initial, 0)
    ckpt.save(step, state, data_state=pipeline.get_state(iterator)); ckpt.close()
    iterator = pipeline.restore(loader, ckpt.data_state(step))

`state` is any pytree of arrays (NNX states as pure dicts, optax states, counters, RNG key
data). `data_state` is the grain iterator position (a string); grain's orbax handler stores
one file per JAX process (``process_<i>-of-<n>.json``), so every host resumes its own shard.
A save killed mid-write leaves a ``*.orbax-checkpoint-tmp`` folder that orbax ignores on
restore, so a crash never yields a half checkpoint. orbax silently skips a save at or below
the latest step; `save` turns that into an error, because it means two runs share a workdir.

Damaged steps (a disk that filled up, a copy cut short, a file edited by hand): before a step
is restored, `step_problem` checks its files -- an empty folder, a truncated or garbled
``_CHECKPOINT_METADATA`` or ``state/_METADATA``, a missing ``state/`` or ``data/`` item or
OCDBT manifest, a data-iterator file that is missing or not JSON -- and the restore itself
must read every array. `restore_or` without a step resumes from the newest intact step: each
newer damaged step is named with what is wrong in a warning and set aside as
``<step>.damaged`` (kept for inspection; orbax no longer lists it, so the step can be saved
again), and leftover ``*.orbax-checkpoint-tmp*`` folders of killed saves are removed with a
warning. With no intact step the run starts at 0. Asked for one step (``step=``), it refuses
with the exact reason instead. A checkpoint that is intact but of another model (other keys or
shapes, in every step) is refused as "does not match this model/config".
"""
import json
import logging as py_logging
import pathlib
import shutil

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from jax_abstain.errors import UserError
from jax_abstain.training import distributed


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

  def restore_or(self, initial_state, step: int | None = None, *, before: int | None = None):
    """Returns (state, step) of checkpoint `step`, or of the newest intact step, or
    (initial_state, 0) when there is none.

    Args:
      initial_state: a pytree like the saved one (its shapes and dtypes are restored).
      step: the step to restore; None = the newest intact one (damaged newer steps are
        reported in a warning and set aside, see the module docstring).
      before: with `step` None, consider only the steps below this one (the others are left
        as they are).

    Raises:
      UserError: the asked `step` is missing or damaged (with what is wrong), or the
        checkpoints are of another model/config.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial_state)
    self._manager.wait_until_finished()     # a save of this process may still be writing
    if step is not None:
      problem = self.step_problem(step)
      state, error = (None, None) if problem else self._try_restore(step, abstract)
      if problem or error:
        raise UserError(f"checkpoint step {step} in {self.directory} "
                        + (f"is damaged: {problem}" if problem else _restore_failure(error)))
      return state, step
    self._remove_unfinished()
    damaged, mismatch = [], None
    for s in sorted(self._manager.all_steps(), reverse=True):
      if before is not None and s >= before:
        continue
      problem = self.step_problem(s)
      if problem is None:
        state, error = self._try_restore(s, abstract)
        if error is None:
          self._set_aside(damaged, resumed=s)
          return state, s
        if _is_mismatch(error):
          mismatch = mismatch or (s, error)
          continue
        problem = f"its arrays cannot be read ({_first_line(error)})"
      damaged.append((s, problem))
    if mismatch is not None:
      raise UserError(f"checkpoint {self.directory}/{mismatch[0]} "
                      + _restore_failure(mismatch[1]))
    self._set_aside(damaged, resumed=None)
    return initial_state, 0

  def intact_steps(self) -> list:
    """The saved steps whose files are intact (`step_problem`); damaged ones are reported and
    set aside as in `restore_or`. (The arrays are read only by a restore.)"""
    self._manager.wait_until_finished()
    self._remove_unfinished()
    damaged = [(s, self.step_problem(s)) for s in self._manager.all_steps()]
    self._set_aside([(s, p) for s, p in damaged if p], resumed="checked")
    return [s for s, p in damaged if p is None]

  def step_problem(self, step: int):
    """What is wrong with the files of saved `step` (one phrase), or None if they look intact;
    see `step_problem` (module level)."""
    return step_problem(self.directory / str(step))

  def _try_restore(self, step: int, abstract):
    """(state, None), or (None, the exception) when orbax cannot restore `step`."""
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
      return restored["state"], None
    except Exception as e:  # pylint: disable=broad-except  (tensorstore raises bare Exception)
      return None, e

  def _remove_unfinished(self) -> None:
    """Removes the ``*.orbax-checkpoint-tmp*`` folders of saves that were killed mid-write."""
    if jax.process_index() != 0:
      return
    for tmp in sorted(self.directory.glob("*.orbax-checkpoint-tmp*")):
      logging.warning("checkpoint %s: removing %s, an unfinished save (the process was killed "
                      "while writing it); orbax never restores it", self.directory, tmp.name)
      shutil.rmtree(tmp, ignore_errors=True)

  def _set_aside(self, damaged, resumed) -> None:
    """Warns about each damaged step and renames it ``<step>.damaged`` (process 0), so that
    orbax forgets it and the resumed run can save that step again."""
    if not damaged:
      return
    then = ("the other steps are intact" if resumed == "checked" else
            f"resuming from step {resumed}, the newest intact step" if resumed is not None
            else "no intact step is left: starting from step 0")
    for step, problem in damaged:
      target = _free_name(self.directory / f"{step}.damaged")
      logging.warning("checkpoint step %d in %s is damaged: %s; set aside as %s; %s", step,
                      self.directory, problem, target.name, then)
      if jax.process_index() == 0:
        (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:
      distributed.wait_for_all(f"checkpoint_set_aside_{self.directory.name}")
    self._manager.reload()

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


def _first_line(error) -> str:
  text = str(error).strip().split(" See full TensorStore details")[0]
  return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _is_mismatch(error) -> bool:
  """True for orbax's errors about the tree (keys, shapes, dtypes), False for unreadable data
  (tensorstore's NOT_FOUND / DATA_LOSS, failed reads)."""
  text = str(error)
  unreadable = ("NOT_FOUND", "DATA_LOSS", "Error reading", "Error opening", "error while reading")
  return isinstance(error, (ValueError, KeyError, TypeError)) and not any(
      u in text for u in unreadable)


def _restore_failure(error) -> str:
  if _is_mismatch(error):
    return f"does not match this model/config ({_first_line(error)})"
  return f"is damaged: its arrays cannot be read ({_first_line(error)})"


def _free_name(path: pathlib.Path) -> pathlib.Path:
  k, candidate = 1, path
  while candidate.exists():
    candidate = path.with_name(f"{path.name}-{k}")
    k += 1
  return candidate


def _json_problem(path: pathlib.Path, name: str):
  """None if `path` holds JSON, else what is wrong with it."""
  if not path.is_file():
    return f"{name} is missing"
  try:
    text = path.read_text()
    json.loads(text)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    kind = "empty" if not path.stat().st_size else "truncated or garbled"
    return f"{name} is {kind} ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
  return None


def _items(step_dir: pathlib.Path):
  """(the items named by ``_CHECKPOINT_METADATA`` or None, a problem or None)."""
  meta = step_dir / "_CHECKPOINT_METADATA"
  if not meta.exists():
    return None, None                      # written by orbax versions that had no such file
  problem = _json_problem(meta, "_CHECKPOINT_METADATA")
  if problem:
    return None, problem
  handlers = json.loads(meta.read_text()).get("item_handlers")
  return (sorted(handlers) if isinstance(handlers, dict) else None), None


def _data_problem(folder: pathlib.Path):
  """What is wrong with the data-iterator item (``data/process_<i>-of-<n>.json``), or None."""
  if not folder.is_dir():
    return "its data/ item (the data iterator state) is missing"
  found = sorted(folder.glob("process_*-of-*.json"))
  if not found:
    return "its data/ item holds no data iterator state"
  for f in found:
    problem = _json_problem(f, f"data/{f.name}")
    if problem:
      return problem
  n = jax.process_count()
  own = folder / f"process_{jax.process_index()}-of-{n}.json"
  if not own.exists() and any(f.name.endswith(f"-of-{n}.json") for f in found):
    return f"data/{own.name} (this process's iterator state) is missing"
  return None                               # another process count: `data_state` refuses


def step_problem(step_dir):
  """Checks the files of one saved step; the restore itself then reads the arrays.

  Args:
    step_dir: ``<checkpoint folder>/<step>``.

  Returns:
    None if the files look intact, else one phrase naming what is wrong: an empty folder, a
    truncated or garbled ``_CHECKPOINT_METADATA`` or ``state/_METADATA``, a missing
    ``state/`` item or OCDBT manifest, a data-iterator file that is missing or not JSON.
  """
  step_dir = pathlib.Path(step_dir)
  if not step_dir.is_dir():
    return "the step folder is missing"
  if not any(step_dir.iterdir()):
    return "the step folder is empty"
  items, problem = _items(step_dir)
  if problem:
    return problem
  if not (step_dir / "state").is_dir():
    return "its state/ item is missing"
  problem = _json_problem(step_dir / "state" / "_METADATA", "state/_METADATA")
  if problem:
    return problem
  meta = json.loads((step_dir / "state" / "_METADATA").read_text())
  if not isinstance(meta, dict) or not isinstance(meta.get("tree_metadata"), dict):
    return "state/_METADATA holds no tree (garbled)"
  if meta.get("use_ocdbt") and not (step_dir / "state" / "manifest.ocdbt").is_file():
    return "state/manifest.ocdbt (the index of the arrays) is missing"
  if (items and "data" in items) or (step_dir / "data").exists():
    return _data_problem(step_dir / "data")
  return None
