"""The train job: train or fine-tune one model, save it, evaluate it (mode ``train``).

    python -m jax_abstain.main --config=configs/cifar10_era.py:init=models/gowal --workdir=runs/era
    results = train.run(job, workdir)          # job: the checked `jobs.schema.Job`

Builds the model (``job.model.name`` from scratch, or loads ``job.model.init_dir`` or the
RobustBench model ``job.model.robustbench`` to fine-tune), trains it with `training.loop.train` (`training.fit`, keeping the selected step:
grain input, SPMD step over all devices and hosts,
step checkpoints with automatic resume, model selection on a validation split), saves it to
``model/`` (loadable with `models.load`) and evaluates it with `evaluation.evaluate` into
``reports/<job.name>.csv`` (``job.eval.kind``: attacks or CERTIFY) and ``results.json``. A rerun
with the same workdir resumes training from the last checkpoint and re-uses a finished report.
With a ``compose`` section the trained model is the branch of a composition:
`jobs.composition` evaluates the core on the same samples, composes and writes the tables and
figures. In a multi-process job every process evaluates its own range of samples (the branch's
and the core's reports); process 0 merges the reports and writes the model and results.
"""
import pathlib

import jax

from jax_abstain import data, files, models, validation
from jax_abstain.errors import UserError
from jax_abstain.jobs import composition, evaluate as evaluate_job, inputs
from jax_abstain.training import loop, selection


def _model(job):
  """(model in train mode, architecture, constructor options) of ``job.model``."""
  m = job.model
  if m.robustbench:
    return inputs.robustbench_model(m.robustbench, job.data.name, m.threat_model, m.options)
  if m.init_dir:
    manifest = models.read_manifest(m.init_dir)
    return (models.load(m.init_dir, eval_mode=False), manifest["architecture"],
            dict(manifest["options"]))
  _, options = models.resolve(m.name, num_classes=m.num_classes or None, **m.options)
  return models.create(m.name, seed=job.seed, **options), m.name, options


def _validation(job, x, y):
  """(training rows, validation rows or None) for model selection (``train.selection_split``:
  ``train_holdout``: ``select_size`` held-out training rows; ``test_slice``: the first
  ``select_size`` evenly spaced test rows, the authors' choice; ``none``)."""
  t = job.train
  if t.selection_split == "none" or not t.select_every:
    return (x, y), None
  if t.selection_split == "train_holdout":
    return selection.holdout(x, y, t.select_size, job.seed)
  x_val, y_val, _ = data.load_from_config(job.data, "test", t.select_size)
  return (x, y), (x_val, y_val)


def run(job, workdir) -> dict:
  """Mode ``train``: train (or fine-tune) ``job.model`` on ``job.data``, save, evaluate.

  Returns:
    {"model": "model", "architecture", "loss", "data", "split", "selected" (the selected
    step, or None), <job.name>: the evaluation summary, and with ``job.compose`` the keys of
    `jobs.composition.run`}, as written to ``results.json`` ({} on processes other than 0).

  Raises:
    UserError: labels outside the model's classes, or a diverging run.
  """
  workdir = pathlib.Path(workdir)
  model, arch, options = _model(job)
  num_classes = int(options["num_classes"])
  x_train, y_train, _ = data.load_from_config(job.data, "train", job.data.train_limit)
  validation.check_labels(y_train, num_classes=num_classes, name="config.data (train split)")
  (x_train, y_train), held_out = _validation(job, x_train, y_train)
  model.train()
  try:
    # `training.fit` without discarding the selected step (results.json records it).
    out = loop.train(model, x_train, y_train, job.train, workdir=workdir, name=job.name,
                     seed=job.seed, augment=job.data.augment, validation=held_out)
  except FloatingPointError as e:   # the command line prints it as one line (it names train.lr)
    raise UserError(str(e)) from e
  model.eval()
  source = {"init_dir": job.model.init_dir or None, "robustbench": job.model.robustbench or None,
            "loss": job.train.loss,
            "data": job.data.name, "selected": out["best"]}
  if jax.process_index() == 0:
    models.save(model, workdir / "model", arch=arch, options=options, source=source,
                overwrite=True)
  # Every process evaluates its own range of the test samples (`evaluation.hosts`); all of
  # them return once process 0 has merged the report.
  x_test, y_test, idx = data.load_from_config(job.data, job.data.split, job.data.eval_limit)
  validation.check_labels(y_test, num_classes=num_classes,
                          name=f"config.data ({job.data.split} split)")
  summary = evaluate_job.report_in_workdir(model, x_test, y_test, job.eval, workdir, job.name,
                                           sample_idx=idx)
  results = {"model": "model", "architecture": arch, "loss": job.train.loss,
             "data": job.data.name, "split": job.data.split, "selected": out["best"],
             job.name: summary}
  if job.compose is not None:   # every process: the core's report is evaluated by all
    results.update(composition.run(job, workdir, x_test, y_test, idx))
  if jax.process_index() != 0:
    return {}
  files.write_json(workdir / "results.json", results)
  return results
