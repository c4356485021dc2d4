"""Jobs: the only code that reads a checked config (`schema.Job`) and writes a workdir.

    job = schema.check(config)
    results = jobs.MODES[job.mode](job, workdir_lib.prepare(path, job))

Each mode is ``jobs.<module>.run(job, workdir) -> results dict`` (docs/design.md, Contracts):
``toy2d`` (the Figure 1 study), ``train`` (train or fine-tune, save, evaluate) and ``evaluate``
(a saved model). Modules load on first use, so a job imports only what it needs.
"""
import importlib

class _Mode:
  """``run(job, workdir)`` of module `jax_abstain.jobs.<name>`, imported when called."""

  def __init__(self, name: str):
    self.name = name

  def __call__(self, job, workdir) -> dict:
    return importlib.import_module(f"jax_abstain.jobs.{self.name}").run(job, workdir)


MODES = {name: _Mode(name) for name in ("toy2d", "train", "evaluate")}
