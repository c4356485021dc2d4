"""Parses the ``:key=value,...`` suffix of ``--config=configs/X.py:key=value``.

Modelled on big_vision's ``configs/common.py:parse_arg``: each config file declares its
arguments and their defaults, and the text after ``:`` overrides them.

    def get_config(arg=None):
      arg = config_args.parse_arg(arg, eps="0.1", fast=False)
      ...

Values are converted to the type of the default (bool accepts true/false/1/0/yes/no); a key
that is not declared is an error naming the declared ones.
"""
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


def parse_arg(arg, **defaults) -> ml_collections.ConfigDict:
  """Returns a ConfigDict of `defaults` overridden by ``arg`` (``"k1=v1,k2=v2"`` or None).

  Raises:
    UserError: for a key not in `defaults`, a malformed item, or a value of the wrong type.
  """
  values = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep:
      raise UserError(f"config argument {item!r}: expected key=value")
    if key not in defaults:
      known = ", ".join(sorted(defaults)) or "none"
      raise UserError(f"unknown config argument {key!r}; known arguments: {known}")
    values[key] = _convert(key, text.strip(), defaults[key])
  return ml_collections.ConfigDict(values)
