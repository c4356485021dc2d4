"""The job config schema: `check(config) -> Job`, the one check of a job config.

    job = schema.check(config)     # a ConfigDict or dict -> a frozen Job, or one UserError
    job.mode, job.data.name, job.model.init_dir, job.train.lr, job.eval.radii

The main command line (`jax_abstain.cli.main`) and the sweep (`jobs.sweep`) apply it once,
before a workdir is written (docs/design.md, "Data flow of a job"). Every problem is
collected into one `UserError`, one line per problem, each naming its field
(``config.train.lr: ...``): unknown fields or names (mode, data set, augmentation, model),
bad values, missing model directories or data paths, a batch that does not split over the
devices, a model with no start (``model.name`` "" and neither ``model.init_dir`` nor
``model.robustbench``: fine-tuning configs never start from random weights), an unknown
RobustBench name. Downloads (the data, RobustBench models) are not done here but by
`jobs.inputs.fetch`, which the command line calls next, still before the workdir is written. The jobs read the typed fields; nothing downstream re-checks or falls back. A
radius that covers the whole input box (Linf >= 1; L2 >= sqrt(2), L1 >= 2 on the 2-D
synthetic set) is not a problem but a warning (`validation.check_radius_in_box`).

A config holds ``mode``, ``name`` (the report name; default: the mode), ``seed`` (0),
``norm`` ("linf"), ``eps`` (the threat radius; toy2d only) and the sections of its mode:

  toy2d     data, model, train (shared), models (per-model overrides of train, plus
            eps_factor), eval, compose (branch, core, select_at), plot (grid)
  train     data, model, train, eval, compose (optional: evaluate a core too and compose)
  evaluate  data, model (dir), eval
"""
import dataclasses
import pathlib

from jax_abstain import data, files, jobs, models, radii, validation
from jax_abstain.errors import UserError
from jax_abstain.evaluation.config import EvalConfig
from jax_abstain.training.config import TrainConfig
from jax_abstain.jobs.settings import (ComposeConfig, DataConfig, Job, ModelConfig,  # noqa: F401
                                       Toy2dConfig)

MODES = tuple(jobs.MODES)
_SECTIONS = {"toy2d": ("data", "model", "train", "models", "eval", "compose", "plot"),
             "train": ("data", "model", "train", "eval", "compose"),
             "evaluate": ("data", "model", "eval")}
_TOP = ("mode", "name", "seed", "eps", "norm")


def _collect(problems: list, fn, *args, **kwargs):
  """fn(*args, **kwargs), or None with the lines of its UserError appended to `problems`."""
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    problems.extend(str(e).splitlines())
    return None


def _as_dict(value, name: str, problems: list) -> dict:
  value = value.to_dict() if hasattr(value, "to_dict") else value
  if value is None:
    return {}
  if not isinstance(value, dict):
    problems.append(f"{name}: expected a mapping of settings, got {type(value).__name__}")
    return {}
  return dict(value)


def _unknown(values: dict, known, name: str, problems: list) -> None:
  for key in values:
    if key not in known:
      problems.append(f"{name}.{key}: unknown field; known: {', '.join(known)}")


def _report_name(value, name):
  if not isinstance(value, str) or not value or any(c in value for c in "/\\") \
      or value.startswith("."):
    raise UserError(f"{name}: expected a plain name for reports/<name>.csv (no slashes), "
                    f"got {value!r}")
  return value


def _text(value, name):
  if not isinstance(value, str):
    raise UserError(f"{name}: expected text, got {value!r}")
  return value


def _data_name(value, name):
  if value not in data.names():
    raise UserError(f"{name}: unknown data set {value!r}; known: {', '.join(data.names())}")
  return value


def _data_path(value, name):
  value = _text(value, name)
  if value:
    files.check_file(value, "folder" if pathlib.Path(value).is_dir() else "file", name)
  return value


def _augment(value, name):
  from jax_abstain.data import augment  # Pillow: only when a config is checked
  if value not in augment.AUGMENTATIONS:
    raise UserError(f"{name}: unknown augmentation {value!r}; known: "
                    f"{', '.join(sorted(augment.AUGMENTATIONS))}")
  return value


def _int(minimum):
  return lambda v, n: validation.check_int(v, n, minimum=minimum)


def _num_classes(value, name):
  if isinstance(value, int) and not isinstance(value, bool) and value == 0:
    return 0
  return validation.check_num_classes(value, name=name)


def _options(value, name):
  value = value.to_dict() if hasattr(value, "to_dict") else value
  if not isinstance(value, dict):
    raise UserError(f"{name}: expected a mapping of constructor options, got {value!r}")
  return dict(value)


def _model_dir(value, name):
  value = _text(value, name)
  if value:
    files.check_file(value, "model", name)
    models.read_manifest(value)
  return value


def _split(value, name):
  return validation.check_choice(value, name, data.SPLITS)


def _radius_text(value, name):
  value = _text(value, name)
  return radii.format_radius(radii.parse_radius(value, name=name)) if value else ""


def _threat_model(value, name):
  return validation.check_choice(value, name, THREAT_MODELS)


THREAT_MODELS = ("Linf", "L2")


_DATA_CHECKS = {"name": _data_name, "path": _data_path, "split": _split,
                "eval_limit": _int(0), "train_limit": _int(0), "augment": _augment,
                "n": _int(1), "data_seed": _int(0), "eval_split": _split}
_MODEL_CHECKS = {"name": _text, "num_classes": _num_classes, "options": _options,
                 "init_dir": _model_dir, "dir": _model_dir, "robustbench": _text,
                 "threat_model": _threat_model}
_COMPOSE_CHECKS = {"core": _text, "core_dir": _model_dir, "select_at": _radius_text,
                   "options": _options}


def _section(cls, values: dict, checks: dict, name: str, problems: list):
  """`cls` built from `values`, every field through `checks`; None after a problem."""
  fields = [f.name for f in dataclasses.fields(cls)]
  before = len(problems)
  _unknown(values, fields, name, problems)
  checked = {k: _collect(problems, checks[k], v, f"{name}.{k}")
             for k, v in values.items() if k in checks}
  for f in dataclasses.fields(cls):
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING \
        and f.name not in values:
      problems.append(f"{name}.{f.name}: missing")
  return cls(**checked) if len(problems) == before else None


def robustbench_architecture(name: str, dataset: str, threat_model: str) -> str:
  """The registry architecture of RobustBench model `name` on the leaderboard (dataset,
  threat_model), checked without the network (`porting.robustbench.entry`).

  Raises:
    UserError: the name is not on that leaderboard (closest names), or its architecture is not
      built here.
  """
  from jax_abstain.porting import robustbench  # pylint: disable=import-outside-toplevel
  row = robustbench.entry(name, dataset, threat_model)
  if robustbench.status(row) != "native":
    raise UserError(robustbench.refusal(row))
  return models.zoo.robustbench_key(row["name"], row["dataset"], row["threat_model"])


def _robustbench_field(field, *args):
  try:
    return robustbench_architecture(*args)
  except UserError as e:
    raise UserError(f"{field}: {e}") from None


def _check_model(model: ModelConfig, mode: str, dataset, problems: list) -> None:
  """The model a job builds or loads exists: a model directory (evaluate), a RobustBench name
  or model directory to fine-tune, or a registry architecture with its options (train from
  scratch, toy2d)."""
  if mode == "evaluate":
    if not model.dir:
      problems.append("config.model.dir: give the model directory, e.g. "
                      "--config=configs/evaluate.py:model=runs/mnist_std/model")
    return
  if model.init_dir and model.robustbench:   # `name` is only used when neither is given
    problems.append("config.model: give one start model, got model.init_dir and "
                    "model.robustbench")
  elif model.robustbench:
    if dataset is not None:
      _collect(problems, _robustbench_field, "config.model.robustbench", model.robustbench,
               dataset, model.threat_model)
  elif not model.init_dir and not model.name:
    problems.append("config.model: no start model: give model.robustbench=NAME (a RobustBench "
                    "model, downloaded) or model.init_dir=DIR (config argument start= or init=);"
                    " fine-tuning never starts from random weights")
  elif not model.init_dir:
    try:
      models.resolve(model.name, num_classes=model.num_classes or None, **model.options)
    except UserError as e:
      problems.append(f"config.model.name: {e}")


def _compose(values: dict, top: dict, model, dataset, problems: list):
  """The train job's optional composition: a core and the threat radius ``config.eps``."""
  if values.get("compose") is None:
    return None
  section = _as_dict(values.get("compose"), "config.compose", problems)
  compose = _section(ComposeConfig, section, _COMPOSE_CHECKS, "config.compose", problems)
  if compose is None:
    return None
  if bool(compose.core) == bool(compose.core_dir):
    problems.append("config.compose: give the core as compose.core=<RobustBench name> or "
                    "compose.core_dir=DIR (one of them)")
  elif compose.core and model is not None and dataset is not None:
    _collect(problems, _robustbench_field, "config.compose.core", compose.core, dataset,
             model.threat_model)
  if not top["eps"]:
    problems.append("config.eps: a train job that composes needs the threat radius, e.g. 1/255")
  return compose


def _toy2d(values: dict, eps: str, problems: list):
  """The toy2d section and each model's `TrainConfig` (None after a problem)."""
  before = len(problems)
  shared = _as_dict(values.get("train"), "config.train", problems)
  if "eps" in shared:
    problems.append("config.train.eps: set by the toy2d job (config.eps times "
                    "config.models.<name>.eps_factor)")
  base = _collect(problems, TrainConfig.from_config, shared, name="config.train")
  specs = _as_dict(values.get("models"), "config.models", problems)
  if not specs:
    problems.append("config.models: expected at least one model, e.g. std=dict(loss='std')")
  trained = {}
  for model, spec in specs.items():
    spec = _as_dict(spec, f"config.models.{model}", problems)
    factor = _collect(problems, validation.check_float, spec.pop("eps_factor", 1),
                      f"config.models.{model}.eps_factor", low=0.0, low_open=True)
    if base is not None and eps and factor is not None:
      overrides = {**dataclasses.asdict(base), **spec, "eps": factor * radii.parse_radius(eps)}
      trained[model] = _collect(problems, TrainConfig.from_config, overrides,
                                name=f"config.models.{model}")
  compose = _as_dict(values.get("compose"), "config.compose", problems)
  plot = _as_dict(values.get("plot"), "config.plot", problems)
  _unknown(compose, ("branch", "core", "select_at"), "config.compose", problems)
  _unknown(plot, ("grid",), "config.plot", problems)
  for role in ("branch", "core"):
    if compose.get(role) not in specs:
      problems.append(f"config.compose.{role}: {compose.get(role)!r} is not one of config.models "
                      f"({', '.join(specs)})")
  select_at = compose.get("select_at") or (radii.double_radius(eps) if eps else "")
  if select_at and _collect(problems, radii.parse_radius, select_at,
                           name="config.compose.select_at"):
    select_at = radii.format_radius(select_at)
  grid = _collect(problems, validation.check_int, plot.get("grid", 200), "config.plot.grid",
                  minimum=2)
  if len(problems) > before:
    return None
  return Toy2dConfig(models=trained, branch=compose["branch"], core=compose["core"],
                     select_at=select_at, grid=grid)


def _eval(values: dict, mode: str, job_values: dict, problems: list):
  """The EvalConfig; toy2d evaluates at eps and 2 eps in the job's norm with the job's seed."""
  section = _as_dict(values.get("eval"), "config.eval", problems)
  if mode == "toy2d":
    for key in ("radii", "norm", "seed"):
      if key in section:
        problems.append(f"config.eval.{key}: set by the toy2d job (eps and 2 eps, config.norm, "
                        "config.seed)")
    if not job_values["eps"] or None in (job_values["norm"], job_values["seed"]):
      return None
    section.update(radii=(job_values["eps"], radii.double_radius(job_values["eps"])),
                   norm=job_values["norm"], seed=job_values["seed"])
  return _collect(problems, EvalConfig.from_config, section, name="config.eval")


def _warn_box_radii(top: dict, train, toy2d, evaluation, job_data) -> None:
  """Warns about each radius of the job that covers the whole input box
  (`validation.check_radius_in_box`): Linf radii here, L2/L1 radii where the input size is
  known before loading (the 2-D synthetic set); attacks and evaluations check again with the
  size of the data they get."""
  d = 2 if job_data is not None and job_data.name == "synthetic" else None
  found = [("config.eps", top["eps"], top["norm"])]
  trains = {f"config.models.{m}": c for m, c in toy2d.models.items()} if toy2d else {}
  if train is not None and not toy2d:
    trains["config.train"] = train
  for where, cfg in trains.items():
    found += [(f"{where}.eps", cfg.eps, cfg.norm), (f"{where}.select_eps", cfg.select_eps, cfg.norm)]
  if toy2d:
    found.append(("config.compose.select_at", toy2d.select_at, top["norm"]))
  if evaluation is not None:
    norm = "l2" if evaluation.certified else evaluation.norm
    found += [(f"config.eval.radii {r}", r, norm) for r in evaluation.radii]
    found += [(f"config.eval.conf_radii {r}", r, norm) for r in evaluation.conf_radii]
  for where, radius, norm in found:
    if radius and norm:
      validation.check_radius_in_box(radii.parse_radius(radius), norm, d, where)


def _top(values: dict, mode: str, problems: list) -> dict:
  """mode, name, seed, eps (canonical text; "" when absent), norm."""
  top = {"mode": mode,
         "name": _collect(problems, _report_name, values.get("name", mode), "config.name"),
         "seed": _collect(problems, validation.check_int, values.get("seed", 0), "config.seed",
                          minimum=0),
         "norm": _collect(problems, validation.check_norm, values.get("norm", "linf"),
                          "config.norm"), "eps": ""}
  if "eps" in values:
    if _collect(problems, radii.parse_radius, values["eps"], name="config.eps") is not None:
      top["eps"] = radii.format_radius(values["eps"])
  elif mode == "toy2d":
    problems.append("config.eps: the toy2d job needs the threat radius, e.g. 0.1")
  return top


def check(config) -> Job:
  """The checked job of `config` (an ml_collections ConfigDict or a nested dict).

  Returns:
    A frozen `Job`: typed fields, every default filled in.

  Raises:
    UserError: every problem found, one line each (see the module docstring).
  """
  problems = []
  values = _as_dict(config, "config", problems)
  mode = values.get("mode")
  if mode not in MODES:
    raise UserError(f"config.mode: expected one of {', '.join(MODES)}, got {mode!r}")
  _unknown(values, _TOP + _SECTIONS[mode], "config", problems)
  top = _top(values, mode, problems)
  job_data = _section(DataConfig, _as_dict(values.get("data"), "config.data", problems),
                      _DATA_CHECKS, "config.data", problems)
  model = _section(ModelConfig, _as_dict(values.get("model"), "config.model", problems),
                   _MODEL_CHECKS, "config.model", problems)
  dataset = job_data.name if job_data is not None else None
  if model is not None:
    _check_model(model, mode, dataset, problems)
  compose = _compose(values, top, model, dataset, problems) if mode == "train" else None
  train = toy2d = None
  if mode == "train":
    train = _collect(problems, TrainConfig.from_config,
                     _as_dict(values.get("train"), "config.train", problems), name="config.train")
  if mode == "toy2d":
    toy2d = _toy2d(values, top["eps"], problems)
    train = next(iter(toy2d.models.values()), None) if toy2d else None
  if train is not None:   # after `distributed.initialize`: counts every host's devices
    from jax_abstain.training import loop  # pylint: disable=import-outside-toplevel
    _collect(problems, loop.check_batch_size, train.batch_size, name="config.train.batch_size")
  evaluation = _eval(values, mode, top, problems)
  if problems:
    raise UserError.from_problems(problems)
  _warn_box_radii(top, train, toy2d, evaluation, job_data)
  return Job(**top, data=job_data, model=model, train=train if mode == "train" else None,
             eval=evaluation, toy2d=toy2d, compose=compose)
