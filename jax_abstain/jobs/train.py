"""Training with the paper's losses: std, TRADES, ERA, DGA, MART, noise, CRA; data parallel.

    python -m jax_abstain.main --config=configs/cifar10_era.py:init=models/gowal --workdir=runs/era
    model = train.fit(model, x, y, config.train, workdir=wd, name="era")

`train_and_evaluate(config, workdir)` is the ``train`` mode of the main job: it checks the
config (loss, model, batch against devices, the model to fine-tune from) before any work,
builds or loads the model, trains it with `training.loop` (grain input, SPMD step over all
devices and hosts, step checkpoints with automatic resume, model selection on a validation
split), saves it, and evaluates it. The step itself (losses, BN modes, optimizer, schedules,
mesh) lives in `training.step`; its names are re-exported here.
"""
import pathlib

import jax

from jax_abstain.errors import UserError
from jax_abstain.training import distributed, loop, selection
from jax_abstain.training.step import (CERTIFIED_DEFAULTS, LOSS_DEFAULT_BN, LOSSES, beta_scale,
                                       data_mesh, lr_boundaries, make_loss_fn, make_optimizer,
                                       make_train_step)

__all__ = ["CERTIFIED_DEFAULTS", "LOSS_DEFAULT_BN", "LOSSES", "beta_scale", "data_mesh", "fit",
           "lr_boundaries", "make_loss_fn", "make_optimizer", "make_train_step", "preflight",
           "train_and_evaluate"]


def fit(model, x, y, cfg, *, workdir, name: str, seed: int = 0, progress: bool = True,
        augment: str = "none", validation=None, mesh=None):
  """Trains `model` in place on (x, y) with loss ``cfg.loss`` and returns it (see
  `training.loop.train` for the arguments); a rerun with the same workdir resumes."""
  return loop.train(model, x, y, cfg, workdir=workdir, name=name, seed=seed, progress=progress,
                    augment=augment, validation=validation, mesh=mesh)["model"]


def preflight(config) -> None:
  """Checks a ``train`` job's config before any data or model is loaded.

  Raises:
    UserError: unknown loss, schedule, BN mode, data set, augmentation or model; a batch that
      does not split over the devices and processes; a missing model to fine-tune from; an
      unknown selection split.
  """
  from jax_abstain import data, models
  from jax_abstain.data import augment
  t, m, d = config.train, config.model, config.data
  make_loss_fn(None, t)                      # loss name, radii, certified settings, BN modes
  lr_boundaries(t.schedule, t.epochs, 1)
  n_dev, n_proc = jax.device_count(), jax.process_count()
  if t.batch_size < 1 or t.batch_size % n_dev or t.batch_size % n_proc:
    raise UserError(f"train.batch_size: {t.batch_size} must be a positive multiple of the "
                    f"{n_dev} devices ({n_proc} processes)")
  if d.name not in data.names():
    raise UserError(f"config.data.name: unknown data set {d.name!r}; known: {', '.join(data.names())}")
  augment.get(d.get("augment", "none"))
  split = t.get("selection_split", "none")
  if split not in selection.SPLITS:
    raise UserError(f"train.selection_split: expected one of {', '.join(selection.SPLITS)}, "
                    f"got {split!r}")
  if m.init_dir:
    if not pathlib.Path(m.init_dir).is_dir():
      raise UserError(f"config.model.init_dir: no model directory at {m.init_dir} (write one "
                      "with python -m jax_abstain.port or a train run)")
    models.read_manifest(m.init_dir)
  else:
    models.resolve(m.name, num_classes=m.num_classes, **dict(m.get("options", {}) or {}))


def _validation(config, x, y):
  """Training rows and validation rows for model selection (None: no selection)."""
  from jax_abstain import data
  t = config.train
  split = t.get("selection_split", "none")
  if split == "none" or not t.get("select_every", 0):
    return (x, y), None
  size = int(t.get("select_size", 2000))
  if split == "train_holdout":
    return selection.holdout(x, y, size, config.seed)
  x_val, y_val, _ = data.load_from_config(config.data, "test", size)
  return (x, y), (x_val, y_val)


def train_and_evaluate(config, workdir) -> dict:
  """Mode ``train``: train (or fine-tune) one model on ``config.data``, save it, evaluate it.

  ``config.model``: ``name`` (registry id), ``num_classes``, ``options`` (constructor options),
  ``init_dir`` (a saved or ported model directory to fine-tune; "" trains from scratch).
  ``config.data.augment`` names the training augmentation; ``config.train`` the loss and
  the loop settings (`training.loop.train`), with ``selection_split`` (``train_holdout``:
  ``select_size`` held-out training rows; ``test_slice``: the first ``select_size`` evenly
  spaced test rows, the authors' choice; ``none``) and ``select_every`` (epochs; 0: the last
  model). ``config.eval.kind == "certified"`` certifies with randomized smoothing instead of
  attacking. Writes ``model/`` (loadable with `models.load`), ``reports/<config.name>.csv``
  and ``results.json`` (with the selected step) into the workdir; a rerun resumes training
  from the last checkpoint. In a multi-process job process 0 evaluates and writes.

  Raises:
    UserError: a bad config (before any work, see `preflight`) or a diverging run.
  """
  from jax_abstain import data, files, models  # the job's pieces, not the step's
  from jax_abstain.evaluation import empirical as evaluate
  preflight(config)
  workdir = pathlib.Path(workdir)
  m = config.model
  options = dict(m.get("options", {}) or {})
  if m.init_dir:
    manifest = models.read_manifest(m.init_dir)
    arch, options = manifest["architecture"], dict(manifest["options"])
    model = models.load(m.init_dir, eval_mode=False)
  else:
    arch = m.name
    _, options = models.resolve(arch, num_classes=m.num_classes, **options)
    model = models.create(arch, seed=config.seed, **options)
  num_classes = int(options["num_classes"])
  x_train, y_train, _ = data.load_from_config(config.data, "train", config.data.train_limit)
  evaluate.check_labels(y_train, num_classes, "config.data (train split)")
  (x_train, y_train), validation = _validation(config, x_train, y_train)
  model.train()
  try:
    out = loop.train(model, x_train, y_train, config.train, workdir=workdir, name=config.name,
                     seed=config.seed, augment=config.data.get("augment", "none"),
                     validation=validation)
  except FloatingPointError as e:   # the CLI prints it as one line (it names train.lr)
    raise UserError(str(e)) from e
  model.eval()
  if jax.process_index() != 0:
    # Evaluation and outputs are process 0's; the others wait so that the job ends together.
    distributed.wait_for_all("evaluated")
    return {}
  source = {"init_dir": str(m.init_dir) if m.init_dir else None, "loss": config.train.loss,
            "data": config.data.name, "selected": out["best"]}
  models.save(model, workdir / "model", arch=arch, options=options, source=source, overwrite=True)
  x_test, y_test, idx = data.load_from_config(config.data, config.data.split,
                                              config.data.eval_limit)
  evaluate.check_labels(y_test, num_classes, f"config.data ({config.data.split} split)")
  summary = _evaluate(config, model, x_test, y_test, idx, workdir)
  results = {"model": "model", "architecture": arch, "loss": config.train.loss,
             "data": config.data.name, "split": config.data.split, "selected": out["best"],
             config.name: summary}
  files.write_json(workdir / "results.json", results)
  print(evaluate.format_summary(config.name, summary) if "at" in summary else summary)
  distributed.wait_for_all("evaluated")
  return results


def _evaluate(config, model, x, y, idx, workdir) -> dict:
  """APGD report and summary, or with ``eval.kind == "certified"`` the CERTIFY report and the
  certified metrics at every radius of ``eval.radii`` (L2)."""
  from jax_abstain.evaluation import certified as certification
  from jax_abstain.evaluation import empirical as evaluate
  e = config.eval
  if e.get("kind", "adversarial") != "certified":
    return evaluate.report_and_summarize(model, x, y, e, workdir, config.name, idx)
  cols = certification.certify_report(
      model, x, y, pathlib.Path(workdir) / "reports" / f"{config.name}.csv",
      key=jax.random.key(e.seed), sigma=e.sigma, n0=e.n0, n=e.n, alpha=e.alpha,
      batch_size=e.batch_size, indices=idx, model_tag=f"{workdir}/model")
  return {"n": int(len(y)), "certified": {str(r): certification.summarize(cols, r)
                                          for r in e.radii},
          "report": f"reports/{config.name}.csv"}
