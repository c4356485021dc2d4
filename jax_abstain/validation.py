"""One input-validation layer for the library and the command lines.

    x = validation.check_images(x, "x")                    # numpy float [B, ...], finite, in [0, 1]
    y = validation.check_labels(y, n=len(x), num_classes=10, name="y")
    eps = validation.check_radius("1/255", "--eps")        # 0.00392..., rejects 0, -1, 1/0, text
    norm = validation.check_norm("L2")                     # "l2"

Every failure a user can cause raises `jax_abstain.errors.UserError` with one line that names
the argument and the expected form (``--eps: expected a positive number such as 0.5 or 1/255,
got 'abc'``); the CLIs (`jax_abstain.cli`) print it and exit 2. Checks run on the host, before
any output is written; inside `jax.jit` (tracers) the array checks are skipped, since the
values are unknown there, and the host-side caller is expected to have checked them.

Input and output paths are checked by `jax_abstain.files` (`check_file`, `check_output`).
Job configs are checked by `jax_abstain.jobs.schema.check`, before a workdir is created.
Re-checking what attacks and certificates return is `jax_abstain.soundness`.
"""
import math
import pathlib

import jax
import numpy as np

from jax_abstain import files, radii
from jax_abstain.errors import UserError

NORMS = ("linf", "l2")


def _traced(*values) -> bool:
  return any(isinstance(v, jax.core.Tracer) for v in values)


def _shown(value) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def check_finite(a, name: str) -> np.ndarray:
  """`a` as a numpy array; raises if it holds NaN or inf."""
  a = np.asarray(a)
  if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
    bad = "NaN" if np.isnan(a).any() else "inf"
    raise UserError(f"{name}: expected finite values, found {bad}")
  return a


def check_images(x, name: str = "x", *, min_ndim: int = 2):
  """Checks a batch of inputs: [B, ...] (NHWC images or [B, D] vectors), float, finite, in [0, 1].

  Args:
    x: numpy or JAX array (tracers pass unchecked).
    name: argument name for the message.
    min_ndim: least number of axes (2: a batch of vectors).

  Returns:
    x as a numpy array (the tracer itself under jit).
  """
  if _traced(x):
    return x
  try:
    x = np.asarray(x)
  except (TypeError, ValueError) as e:
    raise UserError(f"{name}: expected an array [B, ...] of floats in [0, 1] ({e})") from None
  if x.ndim < min_ndim:
    raise UserError(f"{name}: expected a batch [B, ...] with at least {min_ndim} axes, got shape "
                    f"{x.shape}")
  if not np.issubdtype(x.dtype, np.floating):
    raise UserError(f"{name}: expected float values in [0, 1], got dtype {x.dtype}")
  check_finite(x, name)
  if x.size and (x.min() < 0.0 or x.max() > 1.0):
    raise UserError(f"{name}: expected values in [0, 1], got range [{x.min():.4g}, {x.max():.4g}]")
  return x


def check_labels(y, *, n: int | None = None, num_classes: int | None = None, name: str = "y"):
  """Checks integer labels [n] with 0 <= y < num_classes; returns them as a numpy array."""
  if _traced(y):
    return y
  y = np.asarray(y)
  if y.ndim != 1 or (n is not None and y.shape[0] != n):
    want = f"[{n}]" if n is not None else "[N]"
    raise UserError(f"{name}: expected labels of shape {want}, got shape {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise UserError(f"{name}: expected integer class labels, got dtype {y.dtype}")
  if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
    raise UserError(f"{name}: labels span {int(y.min())}..{int(y.max())} but there are "
                    f"{num_classes} classes (expected 0..{num_classes - 1})")
  return y


def check_radius(value, name: str = "eps") -> float:
  """A positive finite radius from ``1/255``, ``0.5``, ``2e-3``, an int or a float."""
  return radii.parse_radius(value, name=name)


def check_radii(values, name: str = "radii", *, allow_empty: bool = False) -> list:
  """A list of radii (each as `check_radius`); element i is named ``name[i]``."""
  if isinstance(values, (str, int, float)):
    values = [values]
  values = list(values)
  if not values and not allow_empty:
    raise UserError(f"{name}: expected at least one radius such as 1/255")
  return [check_radius(v, f"{name}[{i}]") for i, v in enumerate(values)]


def check_eps(eps, name: str = "eps"):
  """A scalar radius (`check_radius`) or a per-example [B] array of positive finite radii."""
  if _traced(eps):
    return eps
  if np.ndim(eps):
    e = np.asarray(eps)
    if not np.issubdtype(e.dtype, np.number) or not np.all(np.isfinite(e)) or np.any(e <= 0):
      raise UserError(f"{name}: expected positive finite radii, got {_shown(e.tolist())}")
    return eps
  return check_radius(eps, name)


def check_norm(norm, name: str = "norm", allowed=NORMS) -> str:
  """``"linf"``, ``"l2"`` (or ``"l1"`` where allowed), case-insensitive."""
  text = str(norm).lower()
  if text not in allowed:
    raise UserError(f"{name}: expected one of {', '.join(allowed)}, got {_shown(norm)}")
  return text


def check_choice(value, name: str, choices):
  if value not in choices:
    raise UserError(f"{name}: expected one of {', '.join(map(str, choices))}, got {_shown(value)}")
  return value


def check_int(value, name: str, *, minimum: int = 1) -> int:
  """An integer >= minimum (bools and floats are refused)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise UserError(f"{name}: expected an integer >= {minimum}, got {_shown(value)}")
  return int(value)


def check_float(value, name: str, *, low=None, high=None, low_open=False, high_open=False) -> float:
  """A finite real number in the interval given by low/high (open ends where asked)."""
  ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
  ok = ok and math.isfinite(float(value))
  if ok and low is not None:
    ok = float(value) > low if low_open else float(value) >= low
  if ok and high is not None:
    ok = float(value) < high if high_open else float(value) <= high
  if not ok:
    lo = "" if low is None else f"{'(' if low_open else '['}{low}"
    hi = "" if high is None else f"{high}{')' if high_open else ']'}"
    where = f" in {lo or '(-inf'}, {hi or 'inf)'}" if low is not None or high is not None else ""
    raise UserError(f"{name}: expected a finite number{where}, got {_shown(value)}")
  return float(value)


def check_sigma(sigma, name: str = "sigma") -> float:
  return check_float(sigma, name, low=0.0, low_open=True)


def check_alpha(alpha, name: str = "alpha") -> float:
  return check_float(alpha, name, low=0.0, high=1.0, low_open=True, high_open=True)


def check_num_classes(num_classes, y=None, name: str = "num_classes") -> int:
  """A class count >= 2 that covers every label in y."""
  num_classes = check_int(num_classes, name, minimum=2)
  if y is not None:
    check_labels(y, num_classes=num_classes)
  return num_classes


def check_attack_inputs(x, y, eps, name: str = "attack"):
  """The inputs of every attack: x [B, ...] in [0, 1], y [B] int, eps (scalar or [B]) > 0."""
  x_np = check_images(x, f"{name}: x")
  check_labels(y, n=None if _traced(x_np) else x_np.shape[0], name=f"{name}: y")
  check_eps(eps, f"{name}: eps")
