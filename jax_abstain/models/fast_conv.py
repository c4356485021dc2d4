"""Input gradients of convolutions and max-pooling that XLA:CPU runs fast inside attack loops.

    fast_fn = fast_conv.fast_input_grads(logits_fn)   # any JAX function: same values, same
                                                      # gradients, fast inside lax loops (CPU)
    conv = nnx.Conv(..., conv_general_dilated=fast_conv.conv_general_dilated)   # one layer

Why: every attack and every adversarial training step differentiates the network with respect
to its input inside a `lax` loop. On XLA:CPU (jax 0.10.2), the input gradient that autodiff
derives for a convolution (a convolution with a reversed kernel whose in/out feature dims are
swapped in the dimension numbers) runs several times slower inside a `while` loop body than at
top level, and a convolution in NCHW layout slower again. Writing the same gradient as an
ordinary channels-last forward convolution (NHWC/HWIO) of the output cotangent with the
flipped, transposed kernel (materialised by `transpose`, so its layout is plain HWIO), and the
forward pass in channels-last layout too, takes XLA's fast convolution path in both places.
The same holds for the select-and-scatter that autodiff derives for a max-pooling: a one-hot of
each window's first maximum is several times faster in loops. BENCHMARKS.md ("Attacks on any
model") measures it on a user's own NCHW and NHWC functions.

`fast_input_grads` applies this to any function: it traces the function to a jaxpr and
evaluates it with every plain convolution (any dimension numbers, 1-3 spatial dims, no
dilation, one feature group) and every non-overlapping max-pooling (window = stride, no
padding) replaced by the forms above, also inside nested `jit`s. Values and gradients are the
same functions (the input gradient of the max-pooling goes to the first maximum of a window,
as select-and-scatter's); sums run in another order, so they may differ by float rounding.
The attacks apply it on CPU (`common.take_model`, `applies`); on other backends nothing is
rewritten (not measured there). Anything else in the function is bound unchanged (custom
derivatives, control flow, convolutions inside them).
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

PLAIN_ENV = "JAX_ABSTAIN_PLAIN_GRADIENTS"
_CHANNELS_LAST = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
                  3: ("NDHWC", "DHWIO", "NDHWC")}


def applies() -> bool:
  """True when the attacks rewrite a model's gradients: on the CPU backend (where it was
  measured), unless ``JAX_ABSTAIN_PLAIN_GRADIENTS=1`` asks for autodiff's plain forms."""
  return (jax.default_backend() == "cpu"
          and os.environ.get(PLAIN_ENV, "") in ("", "0"))


def _input_grad_padding(in_size: int, kernel: int, stride: int, pad: tuple[int, int]):
  """Padding of the forward conv that maps the (stride-dilated) cotangent back to the input.

  Forward: out = floor((in + lo + hi - kernel) / stride) + 1. The cotangent, dilated by
  `stride`, has (out - 1) * stride + 1 rows; a full correlation with the flipped kernel needs
  kernel - 1 - lo rows in front and whatever brings the result back to `in_size` behind.
  """
  lo, hi = pad
  out = (in_size + lo + hi - kernel) // stride + 1
  return kernel - 1 - lo, in_size - 1 - (out - 1) * stride + lo


@functools.lru_cache(maxsize=None)
def _fast_conv(strides: tuple, padding: tuple, dn: lax.ConvDimensionNumbers, precision, pet):
  """The convolution with dimension numbers `dn`, computed channels-last, with a custom VJP
  whose input gradient is a channels-last forward convolution (module docstring)."""
  lhs_spec, rhs_spec, out_spec = dn
  lhs_to = (lhs_spec[0], *lhs_spec[2:], lhs_spec[1])   # -> N, spatial..., C
  rhs_to = (*rhs_spec[2:], rhs_spec[1], rhs_spec[0])   # -> spatial..., I, O
  out_to = (out_spec[0], *out_spec[2:], out_spec[1])
  lhs_from, out_from = tuple(np.argsort(lhs_to)), tuple(np.argsort(out_to))
  last = _CHANNELS_LAST[len(strides)]
  n_sp = len(strides)

  def forward(x, k):
    out = lax.conv_general_dilated(jnp.transpose(x, lhs_to), jnp.transpose(k, rhs_to), strides,
                                   padding, dimension_numbers=last, precision=precision,
                                   preferred_element_type=pet)
    return jnp.transpose(out, out_from)

  @jax.custom_vjp
  def conv(x, k):
    return forward(x, k)

  def conv_bwd(res, g):
    x, k = res
    k_last = jnp.transpose(k, rhs_to)
    pads = [_input_grad_padding(x.shape[a], k_last.shape[i], s, p)
            for i, (a, s, p) in enumerate(zip(lhs_to[1:-1], strides, padding))]
    # Flip spatially and swap in/out features: a plain channels-last kernel from C_out to C_in.
    k_t = jnp.swapaxes(lax.rev(k_last, tuple(range(n_sp))), -1, -2)
    dx = lax.conv_general_dilated(jnp.transpose(g, out_to).astype(k.dtype), k_t, (1,) * n_sp,
                                  pads, lhs_dilation=strides, dimension_numbers=last,
                                  precision=precision)
    _, kernel_vjp = jax.vjp(lambda kk: forward(x, kk), k)
    (dk,) = kernel_vjp(g)
    return jnp.transpose(dx, lhs_from).astype(x.dtype), dk

  conv.defvjp(lambda x, k: (forward(x, k), (x, k)), conv_bwd)
  return conv


@functools.lru_cache(maxsize=None)
def _fast_max_pool(shape: tuple, window: tuple):
  """Non-overlapping max-pooling of an array of `shape` (window = stride, sizes divisible):
  a reshape and a max; the VJP sends each window's cotangent to its first maximum in row-major
  window order, as `lax.reduce_window`'s select-and-scatter does."""
  split = sum(((n // w, w) for n, w in zip(shape, window)), ())
  perm = tuple(range(0, 2 * len(shape), 2)) + tuple(range(1, 2 * len(shape), 2))
  outer = tuple(n // w for n, w in zip(shape, window))

  def windows(x):   # [outer..., prod(window)]
    return jnp.transpose(x.reshape(split), perm).reshape(outer + (-1,))

  @jax.custom_vjp
  def pool(x):
    return jnp.max(windows(x), axis=-1)

  def pool_bwd(x, g):
    first = jax.nn.one_hot(jnp.argmax(windows(x), axis=-1), int(np.prod(window)), dtype=g.dtype)
    dx = (first * g[..., None]).reshape(outer + window)
    return (jnp.transpose(dx, tuple(np.argsort(perm))).reshape(shape),)

  pool.defvjp(lambda x: (pool(x), x), pool_bwd)
  return pool


def _rewrite(eqn, invals):
  """Outputs of `eqn` computed by a fast form, or None when the equation keeps its own."""
  p = eqn.params
  name = eqn.primitive.name
  if name == "conv_general_dilated":
    plain = (p["feature_group_count"] == 1 and p["batch_group_count"] == 1
             and set(p["lhs_dilation"]) <= {1} and set(p["rhs_dilation"]) <= {1}
             and len(p["window_strides"]) in _CHANNELS_LAST)
    if not plain:
      return None
    fn = _fast_conv(tuple(p["window_strides"]), tuple(map(tuple, p["padding"])),
                    p["dimension_numbers"], p["precision"], p["preferred_element_type"])
    return [fn(*invals)]
  if name == "reduce_window_max":
    shape, window = invals[0].shape, tuple(p["window_dimensions"])
    plain = (tuple(p["window_strides"]) == window and all(lo == hi == 0 for lo, hi in p["padding"])
             and set(p["base_dilation"]) <= {1} and set(p["window_dilation"]) <= {1}
             and all(n % w == 0 for n, w in zip(shape, window)))
    return [_fast_max_pool(shape, window)(invals[0])] if plain else None
  if name in ("pjit", "jit"):
    inner = p["jaxpr"]
    return _eval(inner.jaxpr, inner.consts, invals)
  return None


def _eval(jaxpr, consts, args):
  """`jax.core.eval_jaxpr` with the equations `_rewrite` knows replaced."""
  env = {}
  read = lambda v: v.val if isinstance(v, jax.extend.core.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    outs = _rewrite(eqn, invals)
    if outs is None:
      with eqn.ctx.manager:
        outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def fast_input_grads(fn):
  """Returns `fn` with its convolutions and max-poolings in loop-friendly forms.

  Args:
    fn: any JAX function of arrays (pytrees allowed), e.g. logits_fn(x [B, ...]) -> [B, C],
      in NCHW or NHWC, written with `lax.conv_general_dilated`, `flax.linen.Conv`,
      `flax.nnx.Conv`, `lax.reduce_window` max-pooling, ...
  Returns:
    A function with the same signature, values and derivatives (module docstring); it traces
    `fn` once per call (at trace time under `jit`).
  """
  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    outs = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)
  return wrapped


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """Drop-in for `lax.conv_general_dilated` (same arguments) with a loop-friendly input VJP on
  CPU (`applies`); on other backends, or for forms `fast_input_grads` keeps, it is lax's.

  Args:
    lhs: [B,H,W,C_in] inputs (or any layout `dimension_numbers` names).
    rhs: [kh,kw,C_in,C_out] kernel. window_strides: ints. padding: (lo, hi) pairs or a string.
  Returns:
    The convolution, identical to `lax.conv_general_dilated`'s up to float rounding.
  """
  conv = lambda l, r: lax.conv_general_dilated(l, r, window_strides, padding, lhs_dilation,
                                               rhs_dilation, dimension_numbers,
                                               feature_group_count, precision=precision, **kwargs)
  return fast_input_grads(conv)(lhs, rhs) if applies() else conv(lhs, rhs)


def use_fast_convs(model, enabled: bool = True):
  """Switches every `nnx.Conv` of `model` between this module's conv and plain `lax`, in place.

  For checks and benchmarks that the optimised path changes no result. Returns `model`.
  """
  fn = conv_general_dilated if enabled else lax.conv_general_dilated
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.Conv):
      module.conv_general_dilated = fn
  return model
