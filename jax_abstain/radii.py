"""Perturbation radii written the way papers write them: ``1/255``, ``0.5``, ``8/255``.

    >>> parse_radius("2/255")
    0.00784313725490196
    >>> format_radius(0.1)
    '0.1'

Radii stay strings in configs and report column names (``is_rob@1/255``) so that a CSV written
for ``1/255`` is found again by a later run that asks for ``1/255``; `parse_radius` turns them
into floats only where arithmetic happens.
"""
import fractions
import math
import re

from jax_abstain.errors import UserError

_RADIUS_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+))?\s*$")


def parse_radius(text, *, name: str = "radius") -> float:
  """Parses a positive, finite radius such as ``1/255``, ``0.25`` or ``2e-3``.

  Args:
    text: a string (``"1/255"``), int or float.
    name: the argument's name, used in the error message.

  Returns:
    The radius as a Python float, > 0 and finite.

  Raises:
    UserError: for zero, negative, infinite or NaN values, division by zero, or text that is
      not a number or a fraction of two numbers.
  """
  if isinstance(text, bool):
    raise UserError(f"{name}: expected a positive number such as 0.5 or 1/255, got {text!r}")
  if isinstance(text, (int, float)):
    value = float(text)
  else:
    match = _RADIUS_RE.match(str(text))
    if not match:
      raise UserError(f"{name}: expected a positive number such as 0.5 or 1/255, got {text!r}")
    numerator, denominator = match.groups()
    if denominator is not None and float(denominator) == 0.0:
      raise UserError(f"{name}: division by zero in {text!r}; expected e.g. 1/255")
    value = float(numerator) / (float(denominator) if denominator is not None else 1.0)
  if not math.isfinite(value) or value <= 0.0:
    raise UserError(f"{name}: must be a positive finite number, got {text!r}")
  return value


def format_radius(value) -> str:
  """Canonical text of a radius: strings are kept as written (stripped), floats get a short form.

  A float that is k/255 for an integer k is written ``k/255``, the way image radii are usually
  quoted; anything else uses ``repr``'s shortest round-trip form.
  """
  if isinstance(value, str):
    parse_radius(value)
    return "".join(value.split())
  value = float(value)
  frac = fractions.Fraction(value).limit_denominator(255)
  if frac.denominator == 255 and math.isclose(float(frac), value, rel_tol=0, abs_tol=1e-12):
    return f"{frac.numerator}/255"
  return repr(value)


def double_radius(text: str) -> str:
  """The radius ``2 * text`` written in the same style (``1/255`` -> ``2/255``, ``0.1`` -> ``0.2``)."""
  text = format_radius(text)
  if "/" in text:
    numerator, denominator = text.split("/")
    numerator_value = 2 * float(numerator)
    num_text = str(int(numerator_value)) if numerator_value.is_integer() else repr(numerator_value)
    return f"{num_text}/{denominator}"
  return format_radius(2 * parse_radius(text))
