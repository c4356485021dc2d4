"""Training settings: one frozen `TrainConfig`, every field with the paper's default, checked once.

    cfg = TrainConfig.from_config({"loss": "era", "eps": "0.1"})    # the rest: paper defaults
    cfg = TrainConfig.from_config(config.train, name="config.train")  # an ml_collections dict
    cfg.eps, cfg.bn_attack, cfg.selection_eps                        # 0.1, "eval", 0.1

`TrainConfig.from_config` accepts a `TrainConfig`, a dict or an ``ml_collections.ConfigDict``;
it refuses unknown fields and bad values together, in one `UserError` with one line per
problem (``train.lr: expected a finite number in [0.0, inf), got -1``). Radii may be written
``"2/255"``; they are stored as floats in input units. Consumers read the typed fields and
never fall back to defaults of their own (docs/design.md, Contracts).

Defaults are the paper's fine-tuning recipe (paper appendix A.2; docs/design.md, appendix A9):
ERA at eps 2/255 (the paper's method; ``loss="std"`` is plain cross-entropy), 50 epochs, SGD
lr 1e-3 with momentum 0.9 and coupled weight decay 1e-4, global batch 200, the ``trades``
schedule (lr x0.1 from 75% of the epochs), 10-step PGD with step 0.25 eps, beta 1, TRADES
beta 6; the certified losses (paper section 4.2) sigma 0.25, gamma 4 and, as the authors'
code, one noise draw per input for ``noise`` and 16 for ``cra`` (``num_noise=0``; docs/design.md,
appendix A2). Where the authors' code sets BatchNorm modes the defaults follow it: ERA/DGA in
eval mode throughout, TRADES attacks in eval mode and trains in train mode (appendix A1). Model
selection validates every 5 epochs with 40-step PGD (step 0.1 eps) when the caller passes
validation data; ``selection_split`` tells the train job where those rows come from and is
``"none"`` by default, so a job selects only when its config asks for it.
"""
import dataclasses

from jax_abstain import radii, validation
from jax_abstain.errors import UserError

LOSSES = ("std", "trades", "era", "dga", "mart", "noise", "cra", "ibp", "mma")
# Losses that train on PGD points (they read eps, attack_steps, attack_rel_step).
ADVERSARIAL = ("trades", "era", "dga", "mart", "mma")
# Losses on Gaussian copies x + eta (they read sigma, num_noise, gamma).
CERTIFIED = ("noise", "cra")
# Losses on interval bounds over the eps-ball (they read eps, ibp_kappa, ibp_warmup, ibp_ramp).
INTERVAL = ("ibp",)
# The BN mode of a loss's forwards when ``bn_mode_loss`` is "": the authors freeze BN
# statistics during ERA/DGA (every forward in eval mode, docs/design.md, appendix A1) and use
# train mode else.
LOSS_DEFAULT_BN = {"std": "train", "trades": "train", "era": "eval", "dga": "eval",
                   "mart": "train", "noise": "train", "cra": "train", "ibp": "eval",
                   "mma": "train"}
# The BN mode of the training attack when ``bn_mode_attack`` is "": as the loss, except that
# the authors' TRADES fine-tuning runs its KL-PGD in eval mode (appendix A1).
ATTACK_DEFAULT_BN = {**LOSS_DEFAULT_BN, "trades": "eval"}
# Gaussian copies per input when ``num_noise`` is 0: the authors' L_noise draws one, their CRA
# 16 (docs/design.md, appendix A2).
LOSS_DEFAULT_NOISE = {"noise": 1, "cra": 16}
BN_MODES = ("", "train", "eval")
SCHEDULES = ("trades", "trades_scratch", "constant")
VARIANTS = ("paper", "code")
# Where the train job takes validation rows from (`training.selection`).
VALIDATION_SOURCES = ("train_holdout", "test_slice", "none")


def _int(minimum):
  return lambda v, n: validation.check_int(v, n, minimum=minimum)


def _float(low, low_open=False, high=None, high_open=False):
  return lambda v, n: validation.check_float(v, n, low=low, low_open=low_open, high=high,
                                             high_open=high_open)


def _choice(choices):
  return lambda v, n: validation.check_choice(v, n, choices)


def _bn_mode(value, name):
  if value not in BN_MODES:
    raise UserError(f"{name}: expected train, eval or '' (the loss's default), got {value!r}")
  return value


def _optional_radius(value, name):
  return None if value in ("", None) else radii.parse_radius(value, name=name)


# How each field is checked and converted: (value, "train.<field>") -> typed value.
_CHECKS = {
    "loss": _choice(LOSSES), "beta": _float(0.0), "trades_beta": _float(0.0),
    "eps": lambda v, n: radii.parse_radius(v, name=n), "norm": validation.check_norm,
    "variant": _choice(VARIANTS), "epochs": _int(1), "batch_size": _int(1), "lr": _float(0.0),
    "momentum": _float(0.0, high=1.0, high_open=True), "weight_decay": _float(0.0),
    "schedule": _choice(SCHEDULES), "attack_steps": _int(1),
    "attack_rel_step": _float(0.0, low_open=True), "bn_mode_attack": _bn_mode,
    "bn_mode_loss": _bn_mode, "sigma": lambda v, n: radii.parse_radius(v, name=n),
    "num_noise": _int(0), "gamma": _float(0.0, low_open=True), "beta_decay_every": _int(0),
    "beta_decay": _float(0.0, low_open=True), "checkpoint_every": _int(0),
    "keep_checkpoints": _int(1), "log_every": _int(0),
    "selection_split": _choice(VALIDATION_SOURCES), "select_size": _int(1),
    "select_every": _int(0), "select_steps": _int(1),
    "select_rel_step": _float(0.0, low_open=True), "select_batch_size": _int(1),
    "select_eps": _optional_radius, "ibp_kappa": _float(0.0, high=1.0),
    "ibp_warmup": _float(0.0, high=1.0), "ibp_ramp": _float(0.0, high=1.0),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every setting a training run reads (`training.fit`, `loop`, `step`, `selection`).

  Attributes:
    loss: one of `LOSSES` (paper eq. 4-9; `training.objectives`).
    beta: weight of the ERA/DGA/CRA term (>= 0).
    trades_beta: TRADES KL weight inside TRADES, ERA, DGA, MART (>= 0).
    eps: training radius in input units (> 0; "2/255" accepted), for the PGD losses; for
      ``mma`` the hinge d_max of the margin (the authors' MNIST Linf default 0.45).
    norm: "linf" or "l2" (training and selection attacks).
    variant: "paper" (the equations) or "code" (the authors' code; docs/design.md, appendix
      A1 and A2).
    epochs, batch_size: passes over the data (>= 1); global batch (>= 1, a multiple of the
      devices and processes: `loop.plan`).
    lr, momentum, weight_decay: SGD (lr >= 0, momentum in [0, 1), coupled decay >= 0).
    schedule: one of `SCHEDULES` (`step.lr_boundaries`).
    attack_steps, attack_rel_step: PGD steps (>= 1) and step size as a fraction of eps (> 0).
    bn_mode_attack, bn_mode_loss: "train", "eval" or "" (the loss's default: attack
      `ATTACK_DEFAULT_BN`, loss `LOSS_DEFAULT_BN`); read the resolved modes from `bn_attack`
      and `bn_loss`. ``bn_mode_attack="train"`` gives TRADES a train-mode attack.
    sigma, num_noise, gamma: Gaussian noise level (> 0, input units), draws per input (>= 1;
      0: the loss's `LOSS_DEFAULT_NOISE`, 1 for ``noise`` and 16 for ``cra``; read the
      resolved count from `noise_draws`) and inverse softmax temperature (> 0) of the
      certified losses ``noise`` and ``cra``. More draws average the same expectation with
      less variance, at that many times the compute.
    beta_decay_every, beta_decay: beta x ``beta_decay`` every ``beta_decay_every`` epochs (0:
      constant beta, the paper; the authors' CRA script decays; docs/design.md, appendix A2).
    checkpoint_every, log_every: steps between checkpoints / metric lines (0: every epoch).
    keep_checkpoints: checkpoints kept (>= 1).
    selection_split: where the train job takes validation rows from (`VALIDATION_SOURCES`).
    select_size: validation rows (>= 1); select_every: epochs between validations (0: none).
    select_steps, select_rel_step, select_batch_size: the validation PGD and its batch.
    select_eps: the validation radius (None: ``eps``; read `selection_eps`).
    ibp_kappa, ibp_warmup, ibp_ramp: IBP training (``loss="ibp"``, Gowal et al. 2018): the
      final weight kappa of the natural CE (0.5), and the fractions of all steps spent with
      eps 0 and kappa 1 (1/30) and ramping both linearly to eps and kappa (1/6), Gowal et
      al.'s MNIST schedule (2k and 10k of 60k steps); `step.loss_scale`.
  """
  # Grouped a line per theme, in the order of docs/design.md (Contracts).
  loss: str = "era"; beta: float = 1.0; trades_beta: float = 6.0
  eps: float = 2 / 255; norm: str = "linf"; variant: str = "paper"
  epochs: int = 50; batch_size: int = 200
  lr: float = 1e-3; momentum: float = 0.9; weight_decay: float = 1e-4; schedule: str = "trades"
  attack_steps: int = 10; attack_rel_step: float = 0.25
  bn_mode_attack: str = ""; bn_mode_loss: str = ""
  sigma: float = 0.25; num_noise: int = 0; gamma: float = 4.0
  beta_decay_every: int = 0; beta_decay: float = 0.1
  checkpoint_every: int = 0; keep_checkpoints: int = 3; log_every: int = 0
  selection_split: str = "none"; select_size: int = 2000; select_every: int = 5
  select_steps: int = 40; select_rel_step: float = 0.1; select_batch_size: int = 200
  select_eps: float | None = None
  ibp_kappa: float = 0.5; ibp_warmup: float = 1 / 30; ibp_ramp: float = 1 / 6

  def __post_init__(self):
    values, problems = _checked(dataclasses.asdict(self), "train")
    if values.get("loss") in INTERVAL and self.bn_mode_loss == "train":
      problems.append("train.bn_mode_loss: the interval bounds of loss ibp need eval mode "
                      "(fixed BatchNorm statistics), got train")
    if problems:
      raise UserError.from_problems(problems)
    for key, value in values.items():
      object.__setattr__(self, key, value)

  @classmethod
  def from_config(cls, config, *, name: str = "train") -> "TrainConfig":
    """The checked settings of `config` (a TrainConfig, a dict or a ConfigDict; missing fields
    take the defaults).

    Raises:
      UserError: unknown fields or bad values, all of them, one line per problem, each
        starting with ``<name>.<field>``.
    """
    if isinstance(config, cls):
      return config
    given = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(known), key=str)
    problems = [f"{name}.{k}: unknown field; known: {', '.join(known)}" for k in unknown]
    values, bad = _checked({k: v for k, v in given.items() if k in known}, name)
    if problems or bad:
      raise UserError.from_problems(problems + bad)
    return cls(**values)

  @property
  def bn_attack(self) -> str:
    """BN mode ("train" or "eval") of the forward passes inside the training attack."""
    return self.bn_mode_attack or ATTACK_DEFAULT_BN[self.loss]

  @property
  def bn_loss(self) -> str:
    """BN mode ("train" or "eval") of the loss's forward passes."""
    return self.bn_mode_loss or LOSS_DEFAULT_BN[self.loss]

  @property
  def noise_draws(self) -> int:
    """Gaussian copies per input of ``noise`` and ``cra``: ``num_noise``, or the loss's default."""
    return self.num_noise or LOSS_DEFAULT_NOISE.get(self.loss, 16)

  @property
  def selection_eps(self) -> float:
    """The radius of the validation attack: ``select_eps``, or ``eps`` when that is None."""
    return self.eps if self.select_eps is None else self.select_eps


def _checked(values: dict, name: str):
  """(typed values, problems): every field of `values` through its `_CHECKS` entry."""
  out, problems = {}, []
  for key, value in values.items():
    try:
      out[key] = _CHECKS[key](value, f"{name}.{key}")
    except UserError as e:
      problems.append(str(e))
  return out, problems
