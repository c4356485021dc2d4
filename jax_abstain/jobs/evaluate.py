"""The evaluate job: a saved or ported model on a data split, attacked or certified.

    python -m jax_abstain.main --config=evaluate:model=runs/mnist_std/model,data=mnist5k \
        --workdir=runs/eval_mnist_std
    results = evaluate.run(job, workdir)          # job: the checked `jobs.schema.Job`

``job.eval.kind`` chooses the report (docs/design.md, Decisions): ``"empirical"`` attacks at
``job.eval.radii``, ``"certified"`` runs CERTIFY and summarises at the L2 radii
``job.eval.radii``. Either way the job writes ``reports/<job.name>.csv`` (resumable: a rerun
with the same workdir continues where it stopped and re-uses a finished report) and
``results.json``, and prints the summary. In a job of several processes
(`jax_abstain.cli.multihost`, SLURM) each process evaluates its own range of the samples and
process 0 merges the report (`evaluation.hosts`) and writes ``results.json``.
`report_in_workdir` is the evaluation step the train job shares.
"""
import pathlib

import jax

from jax_abstain import evaluation, files
from jax_abstain.evaluation import summary as summary_lib


def run(job, workdir) -> dict:
  """Mode ``evaluate``: loads ``job.model.dir`` and ``job.data``, evaluates, writes results.

  Args:
    job: the checked job (`jobs.schema.Job`): ``job.name`` (report name), ``job.model.dir``
      (a model directory of `models.save` or the port command line), ``job.data`` (a
      `DataConfig`: name, path, split, eval_limit evenly spaced samples, 0 = all) and
      ``job.eval`` (an `EvalConfig`).
    workdir: the run folder (`jobs.workdir.prepare`).

  Returns:
    {"model", "data", "split", <job.name>: the summary of `report_in_workdir`}, as written to
    ``results.json``.

  Raises:
    UserError: an empty split, labels outside the model's classes, a model directory that does
      not load, or a report started with other settings.
  """
  from jax_abstain import data, models  # pylint: disable=import-outside-toplevel
  workdir = pathlib.Path(workdir)
  model = models.load(job.model.dir)
  x, y, idx = data.load_from_config(job.data, job.data.split, job.data.eval_limit)
  num_classes = int(models.read_manifest(job.model.dir)["num_classes"])
  summary_lib.check_labels(y, num_classes, "config.data")
  results = {"model": str(job.model.dir), "data": job.data.name, "split": job.data.split}
  results[job.name] = report_in_workdir(model, x, y, job.eval, workdir, job.name, sample_idx=idx)
  if jax.process_index() == 0:   # every process evaluated its range; one writes the results
    files.write_json(workdir / "results.json", results)
  return results


def report_in_workdir(model, x, y, cfg, workdir, name: str, *, sample_idx=None,
                      progress: bool = True) -> dict:
  """Writes ``reports/<name>.csv`` in `workdir` with `evaluation.evaluate`, prints the summary.

  Args:
    model: NNX model in eval mode; x: [N, ...] in [0, 1]; y: [N] int labels.
    cfg: the `EvalConfig`.
    workdir: the run folder; name: the report name.
    sample_idx: [N] indices of the samples in their split (default 0..N-1).
    progress: show a progress bar.

  Returns:
    The summary (`evaluation.summary.summarize`) with ``"report": "reports/<name>.csv"``
    (relative to the workdir).
  """
  path = pathlib.Path(workdir) / "reports" / f"{name}.csv"
  summary = evaluation.evaluate(model, x, y, cfg, report_path=path, sample_idx=sample_idx,
                                progress=progress)
  summary["report"] = f"reports/{name}.csv"
  print(summary_lib.format_summary(name, summary))
  return summary
