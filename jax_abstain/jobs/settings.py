"""The checked settings of a job (docs/design.md, Contracts): frozen dataclasses that
`jobs.schema.check` builds and the jobs read.

    job = schema.check(config)     # -> Job(mode, name, seed, eps, norm, data: DataConfig,
                                   #        model: ModelConfig, train, eval, toy2d, compose)
    job.to_dict()                  # every setting as JSON data (config.json)
"""
import dataclasses

from jax_abstain.evaluation.config import EvalConfig
from jax_abstain.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the data comes from (`data.load_from_config`).

  Attributes:
    name: a data set of `data.names()`.
    path: its archive or folder ("" for the built-in sets).
    split: the evaluated split of the train and evaluate jobs (``train``, ``val``, ``test``).
    eval_limit, train_limit: evenly spaced samples kept (0 = all).
    augment: training augmentation (`data.augment.AUGMENTATIONS`).
    n, data_seed, eval_split: points per draw, draw seed and evaluated draw of the toy2d job.
  """
  name: str
  path: str = ""
  split: str = "test"
  eval_limit: int = 0
  train_limit: int = 0
  augment: str = "none"
  n: int = 1000
  data_seed: int = 1
  eval_split: str = "test"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model of a job.

  Attributes:
    name: a registry architecture (`models.names()`) built from scratch ("": none; ignored
      when ``init_dir`` or ``robustbench`` gives the start model).
    num_classes: its outputs (0: the saved model's, for ``init_dir`` and ``dir``).
    options: its constructor options (`models.resolve`); for ``robustbench`` the size
      overrides of `models.load_robustbench` (``depth``, ``widen_factor``, ``width``: small
      test checkpoints).
    init_dir: a saved or ported model directory to fine-tune.
    dir: the model directory the evaluate job evaluates.
    robustbench: a RobustBench model name to fine-tune, on the leaderboard of the job's data
      set and `threat_model` (downloaded and ported on first use, `jobs.inputs`).
    threat_model: its leaderboard: ``Linf`` or ``L2``.
  """
  name: str = ""
  num_classes: int = 0
  options: dict = dataclasses.field(default_factory=dict)
  init_dir: str = ""
  dir: str = ""
  robustbench: str = ""
  threat_model: str = "Linf"


@dataclasses.dataclass(frozen=True)
class ComposeConfig:
  """The composition a train job ends with (paper eq. 12): the trained model is the branch.

  Attributes:
    core: the core, a RobustBench name (same data set and threat model as ``model``).
    core_dir: or the core's model directory.
    select_at: the selector's radius (text; "" = 2 eps, the sound choice, docs/design.md,
      appendix A6); the threat radius is the job's ``eps``.
    options: size overrides of the RobustBench core (as `ModelConfig.options`).
  """
  core: str = ""
  core_dir: str = ""
  select_at: str = ""
  options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Toy2dConfig:
  """The Figure 1 study (`jobs.toy2d`).

  Attributes:
    models: model name -> its `TrainConfig` (the shared ``train`` section overridden by
      ``models.<name>``, at ``eps_factor`` times eps), in training order.
    branch, core: the models of the composition H = ((branch, S), core) (eq. 12).
    select_at: the selector's radius (text; 2 eps unless the config names one).
    grid: points per axis of the decision-region plot.
  """
  models: dict
  branch: str
  core: str
  select_at: str
  grid: int


@dataclasses.dataclass(frozen=True)
class Job:
  """A checked job config (docs/design.md, Contracts); `check` builds it."""
  mode: str
  name: str
  seed: int
  eps: str
  norm: str
  data: DataConfig
  model: ModelConfig
  train: TrainConfig | None = None
  eval: EvalConfig | None = None
  toy2d: Toy2dConfig | None = None
  compose: ComposeConfig | None = None

  def to_dict(self) -> dict:
    """Every setting as plain JSON data (what ``config.json`` records)."""
    return _plain(dataclasses.asdict(self))


def _plain(value):
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value
