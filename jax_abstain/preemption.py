"""SIGTERM, what SLURM and cloud schedulers send before they preempt a job, as a request to
stop at the next step boundary: training saves a checkpoint there, evaluation stops after the
chunk it has flushed, and the command line exits without a traceback.

    with preemption.Watch() as watch:
      for step in range(start, total):
        ...
        if watch.requested(step + 1):
          save(step + 1)
          raise preemption.Preempted(f"training stopped at step {step + 1}")

One process: a Python SIGTERM handler sets a flag for the duration of the ``with`` (the
previous handler is restored after). Several processes joined by `jax.distributed`: JAX's
preemption service (started by ``jax.distributed.initialize``) already catches SIGTERM and
agrees with the other processes on a step; ``requested(step)`` is then
`jax.experimental.multihost_utils.reached_preemption_sync_point`, what orbax's
``CheckpointManager.reached_preemption`` calls, and every process must call it at every step
(``sync=True``). A loop whose processes do not step together (evaluation ranges) passes
``sync=False``: it then relies on its per-chunk flushes, and a SIGTERM there ends the process
as usual (JAX's handler defers it to the scheduler's SIGKILL).
"""
import signal
import threading

# Exit status of a command line that stopped on SIGTERM after saving (what a shell reports for
# a process ended by SIGTERM: 128 + 15).
EXIT_STATUS = 128 + signal.SIGTERM


class Preempted(Exception):
  """The run stopped at a step boundary on SIGTERM, its state saved; run it again to resume."""


class Watch:
  """Context manager; `requested(step)` is True once SIGTERM arrived (see the module)."""

  def __init__(self, *, sync: bool = True):
    self.sync, self.flag, self._previous, self._processes = sync, False, None, 1

  def __enter__(self):
    import jax  # pylint: disable=import-outside-toplevel  (the command lines import this early)
    self._processes = jax.process_count()
    if self._processes == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def _on_sigterm(self, *_):
    self.flag = True

  def requested(self, step: int) -> bool:
    """Whether to stop after `step` (every process of a synced job gets the same answer)."""
    if self._processes == 1 or not self.sync:
      return self.flag
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    try:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:   # the preemption service is switched off (jax config)
      return False

  def __exit__(self, *_):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
