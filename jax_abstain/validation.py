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

Models taken in by attacks, smoothing and evaluation (docs/design.md, Contracts):

    fn, out = validation.inference_model(model, x)          # eval-mode copy, abstract logits
    n_classes = validation.check_logits(out, n=len(x))     # [B, C], C >= 2 (finite if concrete)
    validation.check_radius_in_box(8.0, "linf", 3072)      # warns: the ball covers [0, 1]^d

An NNX module is never run itself: `inference_model` runs an eval-mode copy (BatchNorm on its
running statistics, dropout off) that holds the same arrays, so nothing an attack does reaches
the caller's module, and refuses a model whose forward pass would still change its state
(a Variable it updates, `sow`, an Rngs stream it draws from). A function is used as given;
one that changes a module it closes over (a module in training mode) is refused with the
advice to call ``.eval()``. A radius that covers the whole input box [0, 1]^d is allowed
(robustness there means a constant prediction) but warned about (`check_radius_in_box`).

Input and output paths are checked by `jax_abstain.files` (`check_file`, `check_output`).
Job configs are checked by `jax_abstain.jobs.schema.check`, before a workdir is created.
Re-checking what attacks and certificates return is `jax_abstain.soundness`.
"""
import math
import pathlib
import warnings

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


def check_attack_inputs(x, y, eps, name: str = "attack", norm: str | None = None):
  """The inputs of every attack: x [B, ...] in [0, 1], y [B] int, eps (scalar or [B]) > 0;
  with `norm`, a warning if eps covers the whole input box (`check_radius_in_box`)."""
  x_np = check_images(x, f"{name}: x")
  check_labels(y, n=None if _traced(x_np) else x_np.shape[0], name=f"{name}: y")
  check_eps(eps, f"{name}: eps")
  if norm is not None:
    check_radius_in_box(eps, norm, int(np.prod(np.shape(x)[1:])), f"{name}: eps")


def box_diameter(norm: str, n_features: int) -> float:
  """The diameter of the box [0, 1]^d in a norm: 1 (Linf), sqrt(d) (L2), d (L1)."""
  return {"linf": 1.0, "l2": math.sqrt(n_features), "l1": float(n_features)}[norm]


def check_radius_in_box(eps, norm: str, n_features: int | None = None, name: str = "eps") -> bool:
  """Warns (UserWarning) when a radius covers the whole input box [0, 1]^d; returns True if so.

  The ball of radius eps around every point of the box contains the whole box iff eps >= the
  box's diameter (`box_diameter`: 1 for Linf, sqrt(d) for L2, d for L1; a corner needs all of
  it to reach the opposite corner). Such a radius is legal but
  almost surely a unit slip (8 for 8/255): every input can then be moved anywhere in the box,
  and only a constant prediction is robust. A warning, not an error, so that a sweep over radii
  runs on. With ``n_features`` None only the Linf check (which needs no d) runs; traced radii
  pass unchecked. eps may be a scalar or per-example radii (the largest is checked).
  """
  if _traced(eps) or norm not in ("linf", "l2", "l1") or (norm != "linf" and not n_features):
    return False
  largest = float(np.max(np.asarray(eps, np.float64)))
  diameter = box_diameter(norm, int(n_features or 1))
  if not largest >= diameter:
    return False
  box = f"[0, 1]^{n_features}" if n_features else "[0, 1]^d"
  warnings.warn(f"{name}: the {norm} radius {largest:g} covers the whole input box {box} (its "
                f"{norm} diameter is {diameter:g}), so only a constant prediction is robust; "
                "radii are in input units (8/255, not 8)", UserWarning, stacklevel=3)
  return True


def check_logits(logits, n: int | None = None, name: str = "model") -> int:
  """Checks a model's output at the clean inputs; returns the class count C.

  Args:
    logits: [n, C] array, tracer or `jax.ShapeDtypeStruct` (shape checks only for the last two).
    n: the batch size the model was given.
    name: what produced the logits, for the message.

  Raises:
    UserError: not 2-D [n, C], fewer than 2 classes (one logit is no class distribution), or
      NaN/inf values.
  """
  if not hasattr(logits, "shape"):
    raise UserError(f"{name}: expected logits, an array [{'B' if n is None else n}, C], got "
                    f"{type(logits).__name__}")
  shape = tuple(logits.shape)
  if len(shape) != 2 or (n is not None and shape[0] != n):
    raise UserError(f"{name}: expected logits of shape [{'B' if n is None else n}, C] for "
                    f"{'the' if n is None else n} inputs, got shape {shape}")
  if shape[1] < 2:
    raise UserError(f"{name}: returns {shape[1]} logit(s) per input, a class distribution needs "
                    ">= 2 (for a binary model with one logit z return [0, z])")
  if not _traced(logits) and not isinstance(logits, jax.ShapeDtypeStruct):
    a = np.asarray(logits)
    if not np.all(np.isfinite(a)):
      rows = np.flatnonzero(~np.all(np.isfinite(a), axis=-1))
      raise UserError(f"{name}: returns NaN or inf logits for {rows.size} of {shape[0]} inputs "
                      f"(first: input {int(rows[0])})")
  return shape[1]


def eval_copy(model):
  """An NNX module as attacks, smoothing and evaluation run it: a copy in eval mode.

  The copy (`nnx.clone`) holds the same arrays in new Variables, so running it never changes
  the caller's module; ``.eval()`` on it sets BatchNorm to its running statistics and turns
  dropout off. Anything else (a function) is returned as given.
  """
  from flax import nnx  # pylint: disable=import-outside-toplevel  (keeps this module light)
  if not isinstance(model, nnx.Module):
    return model
  copy = nnx.clone(model)
  copy.eval()
  return copy


# (graphdef, state shapes, per-example input shapes) -> (per-example output shape, dtype)
_OUTPUT_SHAPES = {}


def _first_line(error) -> str:
  return str(error).strip().splitlines()[0].split(" (https://")[0] if str(error).strip() else ""


def output_shape(fn, *inputs, name: str = "model"):
  """The abstract output of ``fn(*inputs)`` (`jax.eval_shape`: a trace, no computation).

  Tracing also finds a forward pass that would change an NNX module's state: Flax refuses to
  mutate a Variable from inside a trace (`flax.errors.TraceContextError`), before anything is
  written. Results for modules are cached by graph and shapes.

  Raises:
    UserError: the forward pass changes the state of `fn` (an NNX module, even in eval mode)
      or of a module `fn` closes over (e.g. one in training mode).
  """
  from flax import errors as flax_errors, nnx  # pylint: disable=import-outside-toplevel
  key = None
  batch = np.shape(inputs[0])[0] if inputs and np.ndim(inputs[0]) else None
  if isinstance(fn, nnx.Module) and batch is not None:
    graphdef, state = nnx.split(fn)
    shapes = lambda tree, skip: tuple((np.shape(a)[skip:], str(a.dtype))
                                      for a in jax.tree.leaves(tree))
    # Per-example shapes: attacks call with many batch sizes (survivors), one trace serves all.
    key = (graphdef, shapes(state, 0), shapes(inputs, 1))
    if key in _OUTPUT_SHAPES:
      rest, dtype = _OUTPUT_SHAPES[key]
      return jax.ShapeDtypeStruct((batch,) + rest, dtype)
  try:
    out = jax.eval_shape(fn, *inputs)
  except flax_errors.TraceContextError as e:
    if key is not None:
      raise UserError(f"{name}: its forward pass changes its state even in eval mode "
                      f"({_first_line(e)}); attacks, smoothing and evaluation need a forward pass "
                      "that leaves the model unchanged (a randomized model: pass a function "
                      "(x, keys) -> logits)") from None
    raise UserError(f"{name}: calling it changes the state of an NNX module it uses "
                    f"({_first_line(e)}): a module in training mode? Call model.eval() first, "
                    "or pass the module itself (it then runs in eval mode)") from None
  if key is not None and isinstance(out, jax.ShapeDtypeStruct) and out.shape[:1] == (batch,):
    if len(_OUTPUT_SHAPES) >= 64:
      _OUTPUT_SHAPES.clear()
    _OUTPUT_SHAPES[key] = (tuple(out.shape[1:]), out.dtype)
  return out


def inference_model(model, *inputs, name: str = "model"):
  """(fn, out): the model as it is run (`eval_copy`) and its abstract output for `inputs`.

  Raises:
    UserError: see `output_shape`.
  """
  fn = eval_copy(model)
  return fn, output_shape(fn, *inputs, name=name)
