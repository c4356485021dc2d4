"""Config arguments and the builders the config files share.

    def get_config(arg=None):
      arg = common.parse_arg(arg, eps="0.1", fast=False)   # "eps=0.2,fast=true" or a dict
      ...

`parse_arg` is modelled on big_vision's ``configs/common.py:parse_arg``: each config file
declares its arguments and their defaults; the text after ``:`` in
``--config=configs/X.py:key=value,...`` (or, from Python, a dict) overrides them. Text values
are converted to the type of the default (bool accepts true/false/1/0/yes/no); a key that is
not declared is an error naming the declared ones. `small_cnn_job` is the train-mode config of
the small CNN on the 5,000 MNIST digits (configs/mnist5k.py, configs/mnist_era.py).
"""
from collections.abc import Mapping

import ml_collections

from jax_abstain.errors import UserError

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def _convert(key, text, default):
  if isinstance(default, bool):
    lowered = text.lower()
    if lowered in _TRUE | _FALSE:
      return lowered in _TRUE
    raise UserError(f"config argument {key}: expected true or false, got {text!r}")
  if isinstance(default, int):
    try:
      return int(text)
    except ValueError:
      raise UserError(f"config argument {key}: expected an integer, got {text!r}") from None
  if isinstance(default, float):
    try:
      return float(text)
    except ValueError:
      raise UserError(f"config argument {key}: expected a number, got {text!r}") from None
  return text


def parse_items(text) -> dict:
  """``"k1=v1,k2=v2"`` -> ``{"k1": "v1", "k2": "v2"}`` (values stay text; "" or None: {}).

  Raises:
    UserError: an item without ``=``.
  """
  items = {}
  for item in filter(None, (text or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise UserError(f"config argument {item!r}: expected key=value")
    items[key.strip()] = value.strip()
  return items


def parse_arg(arg, **defaults) -> ml_collections.ConfigDict:
  """`defaults` overridden by `arg`: ``"k1=v1,k2=v2"``, a mapping, or None.

  Text values (from a string, or strings in a mapping) are converted to the default's type;
  other values of a mapping are taken as they are.

  Raises:
    UserError: for a key not in `defaults`, a malformed item, or a value of the wrong type.
  """
  given = dict(arg) if isinstance(arg, Mapping) else parse_items(arg)
  values = dict(defaults)
  for key, value in given.items():
    if key not in defaults:
      known = ", ".join(sorted(defaults)) or "none"
      raise UserError(f"unknown config argument {key!r}; known arguments: {known}")
    values[key] = _convert(key, value, defaults[key]) if isinstance(value, str) else value
  return ml_collections.ConfigDict(values)


def radius_list(text: str) -> tuple:
  """``"0.05;0.1"`` -> ``("0.05", "0.1")`` (semicolons separate radii inside a config
  argument, whose items are separated by commas)."""
  return tuple(r.strip() for r in str(text).split(";") if r.strip())


def small_cnn_job(*, name: str, seed: int, init: str, train_limit: int, eval_limit: int,
                  eval_radii, eval_batch: int, arch: str = "small-cnn", conf_radii=(),
                  **train) -> ml_collections.ConfigDict:
  """A ``train``-mode config: the small CNN of TRADES on the 5,000 MNIST digits.

  Args:
    name: report name (``reports/<name>.csv``).
    seed: the job's seed (data order, attack keys).
    init: a model directory to fine-tune ("" trains from scratch).
    train_limit: training digits (0 = all 4,000); eval_limit: test digits (0 = all 1,000).
    eval_radii: Linf radii of the APGD-CE evaluation (20 steps).
    eval_batch: evaluation batch size.
    conf_radii: radii of the APGDconf column (softmax response), none by default.
    arch: the 28x28 registry model (``small-cnn``, or ``gowal-small`` for IBP training).
    **train: the loss settings: loss, beta, trades_beta, eps, epochs, lr, schedule.

  Returns:
    The config; the authors' code variant (one CE-PGD point per ERA step), batch 50, SGD
    momentum 0.9, weight decay 1e-4, 10-step PGD with step 0.25 eps.
  """
  config = ml_collections.ConfigDict()
  config.mode = "train"
  config.name = name
  config.seed = seed
  config.data = dict(name="mnist5k", path="", split="test", eval_limit=eval_limit,
                     train_limit=train_limit)
  # One start model: the architecture from scratch, or the model directory to fine-tune.
  config.model = dict(name="" if init else arch, num_classes=10,
                      options={} if init else dict(in_channels=1), init_dir=init)
  config.train = dict(norm="linf", variant="code", batch_size=50, momentum=0.9,
                      weight_decay=1e-4, attack_steps=10, attack_rel_step=0.25,
                      bn_mode_attack="", bn_mode_loss="", **train)
  config.eval = dict(kind="empirical", radii=tuple(eval_radii), conf_radii=tuple(conf_radii),
                     norm="linf", n_iter=20, n_restarts=1, batch_size=eval_batch, seed=0)
  return config
