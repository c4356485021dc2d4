"""Evaluation settings: `EvalConfig`, its paper defaults and its one check.

    cfg = EvalConfig.from_config({"radii": ("1/255", "2/255")})             # APGD-CE, 40 steps
    cfg = EvalConfig.from_config({"kind": "certified", "sigma": 0.12, "radii": (0.25, 0.5)})
    cfg = EvalConfig.from_config(config.eval, name="config.eval")           # a ConfigDict

``kind`` is the one switch between an attack report (``"empirical"``: APGD-CE or AutoAttack
at ``radii``, APGDconf at ``conf_radii``) and a certified report (``"certified"``: CERTIFY of
Cohen et al. with ``sigma``, ``n0``, ``n``, ``alpha``; ``radii`` are then the L2 radii of the
summary). Unknown fields and bad values are refused together, one line per problem, before
anything runs (docs/design.md, Contracts); consumers read the typed attributes.
"""
import dataclasses
from typing import Mapping

from jax_abstain import radii as radii_lib
from jax_abstain import validation
from jax_abstain.errors import UserError

KINDS = ("empirical", "certified")
ATTACKS = ("apgd-ce", "autoattack")
# Options of `attacks.autoattack` a config may set (the rest are per-call arguments).
AUTOATTACK_OPTIONS = ("version", "attacks_to_run", "n_iter", "n_queries", "n_target_classes",
                      "eot_iter")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How a model is evaluated; every default is the paper's setting.

  Attributes:
    kind: ``"empirical"`` (attack report) or ``"certified"`` (randomized smoothing report).
    radii: empirical: the radii of the ``is_rob@<r>`` columns (input units, e.g. ``"1/255"``);
      certified: the L2 radii of the summary. Canonical radius texts (`radii.format_radius`).
    conf_radii: radii of the ``adv_conf@<r>`` (APGDconf, eq. 17) columns; empirical only.
    norm: threat model of the attacks, ``"linf"`` or ``"l2"``.
    n_iter, n_restarts: APGD budget (40 steps, 1 restart in the paper).
    batch_size: samples per device in an attack batch (a chunk: this times the local devices;
      one report flush per chunk). The same reports on any number of devices and hosts; other
      batch sizes agree up to the last digits of the confidences.
    seed: base key ``jax.random.key(seed)``; sample i uses ``fold_in(key, sample_idx_i)``.
    attack: ``"apgd-ce"`` (the paper) or ``"autoattack"`` for the ``is_rob`` columns.
    autoattack: `attacks.autoattack` options (``version``, ``attacks_to_run``, ``n_iter``, ...).
    sigma: noise level of the smoothed classifier (> 0; 0.12 on CIFAR-10 in the paper).
    n0, n, alpha: CERTIFY's selection draws, estimation draws and failure probability
      (100, 100 000, 0.001 in the paper, after Cohen et al.).
    noise_batch_size: noisy copies per forward pass and device of CERTIFY, which certifies
      ``noise_batch_size // 100`` samples per device at once (does not change the results).
  """
  kind: str = "empirical"
  radii: tuple = ()
  conf_radii: tuple = ()
  norm: str = "linf"
  n_iter: int = 40
  n_restarts: int = 1
  batch_size: int = 500
  seed: int = 0
  attack: str = "apgd-ce"
  autoattack: dict = dataclasses.field(default_factory=dict)
  sigma: float = 0.12
  n0: int = 100
  n: int = 100_000
  alpha: float = 0.001
  noise_batch_size: int = 1000

  @property
  def certified(self) -> bool:
    return self.kind == "certified"

  @classmethod
  def from_config(cls, mapping, *, name: str = "eval", labels=None) -> "EvalConfig":
    """The checked settings of an EvalConfig, a dict or an ml_collections ConfigDict.

    Args:
      mapping: the fields to set (the others keep their defaults); an EvalConfig is re-checked.
      name: prefix of the field names in messages (``config.eval`` in a job).
      labels: optional {field: name shown in messages}, e.g. ``{"sigma": "--sigma"}`` for a
        command line; other fields are shown as ``<name>.<field>``.

    Returns:
      A frozen `EvalConfig` with canonical values (radii as texts, norm lower case).

    Raises:
      UserError: one line per unknown field or bad value, all of them at once.
    """
    values = _as_dict(mapping, name)
    fields = [f.name for f in dataclasses.fields(cls)]
    label = lambda key: (labels or {}).get(key, f"{name}.{key}")
    problems = [_unknown(key, name, fields) for key in values if key not in fields]
    checked = {}
    for key in fields:
      if key in values:
        try:
          checked[key] = _CHECKS[key](values[key], label(key))
        except UserError as e:
          problems.append(str(e))
    if checked.get("kind", "empirical") == "certified" and checked.get("conf_radii"):
      problems.append(f"{label('conf_radii')}: APGDconf columns belong to kind 'empirical'; a "
                      "certified evaluation has none")
    if problems:
      raise UserError("\n".join(problems))
    return cls(**checked)


def _as_dict(mapping, name: str) -> dict:
  if isinstance(mapping, EvalConfig):
    return dataclasses.asdict(mapping)
  if hasattr(mapping, "to_dict"):
    mapping = mapping.to_dict()
  if mapping is None:
    return {}
  if not isinstance(mapping, Mapping):
    raise UserError(f"{name}: expected a mapping of evaluation settings, got "
                    f"{type(mapping).__name__}")
  return dict(mapping)


def _unknown(key, name: str, fields) -> str:
  if key == "certify":
    return (f"{name}.certify: unknown field; a certified evaluation is {name}.kind='certified' "
            f"with {name}.sigma, n0, n, alpha, noise_batch_size and the L2 radii in {name}.radii")
  return f"{name}.{key}: unknown field (expected one of {', '.join(fields)})"


def _radii(value, name: str) -> tuple:
  if isinstance(value, (str, int, float)):
    value = (value,)
  if not isinstance(value, (list, tuple)):
    raise UserError(f"{name}: expected a list of radii such as ('1/255', '2/255'), got "
                    f"{type(value).__name__}")
  validation.check_radii(value, name, allow_empty=True)
  return tuple(radii_lib.format_radius(v) for v in value)


def _autoattack(value, name: str) -> dict:
  if not isinstance(value, Mapping):
    raise UserError(f"{name}: expected a mapping of autoattack options, got "
                    f"{type(value).__name__}")
  value = dict(value)
  unknown = sorted(set(value) - set(AUTOATTACK_OPTIONS))
  if unknown:
    raise UserError(f"{name}: unknown option {unknown[0]!r} (expected "
                    f"{', '.join(AUTOATTACK_OPTIONS)})")
  for key in ("n_iter", "n_queries", "n_target_classes", "eot_iter"):
    if key in value:
      validation.check_int(value[key], f"{name}.{key}")
  if "attacks_to_run" in value:
    if isinstance(value["attacks_to_run"], str) or not isinstance(value["attacks_to_run"],
                                                                   (list, tuple)):
      raise UserError(f"{name}.attacks_to_run: expected a list of attack names such as "
                      f"('apgd-ce', 'fab-t'), got {value['attacks_to_run']!r}")
    value["attacks_to_run"] = list(value["attacks_to_run"])
  from jax_abstain.attacks.autoattack import attack_names  # pylint: disable=import-outside-toplevel
  try:
    attack_names(value.get("version", "standard"), value.get("attacks_to_run"))
  except UserError as e:
    raise UserError(f"{name}: {str(e).removeprefix('autoattack: ')}") from None
  return value


_CHECKS = {
    "kind": lambda v, n: validation.check_choice(v, n, KINDS),
    "radii": _radii,
    "conf_radii": _radii,
    "norm": validation.check_norm,
    "n_iter": validation.check_int,
    "n_restarts": validation.check_int,
    "batch_size": validation.check_int,
    "seed": lambda v, n: validation.check_int(v, n, minimum=0),
    "attack": lambda v, n: validation.check_choice(v, n, ATTACKS),
    "autoattack": _autoattack,
    "sigma": validation.check_sigma,
    "n0": validation.check_int,
    "n": validation.check_int,
    "alpha": validation.check_alpha,
    "noise_batch_size": validation.check_int,
}
