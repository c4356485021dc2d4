"""2-D convolution whose input gradient is an explicit forward convolution (XLA CPU speed).

    conv = nnx.Conv(..., conv_general_dilated=fast_conv.conv_general_dilated)

Why: every attack and every adversarial training step differentiates the network with respect
to its input inside a `lax` loop. On XLA:CPU (jax 0.10.2), the input gradient that autodiff
derives for a convolution (a convolution with a reversed kernel whose in/out feature dims are
swapped in the dimension numbers) runs several times slower inside a `while` loop body than at
top level. Writing the same gradient as an ordinary NHWC/HWIO forward convolution of the output
cotangent with the flipped, transposed kernel (materialised by `transpose`, so its layout is
plain HWIO) takes XLA's fast convolution path in both places. The APGD benchmark measures the
difference (`benchmarks/apgd.py`, `plain_conv_check`; BENCHMARKS.md section 5: jitted APGD-CE
12.2 s with autodiff's form vs 1.36 s on the digits CNN, 10.8 s vs 3.08 s on ResNet-18). The
result is the same function; tests compare it with `jax.vjp` of `lax.conv_general_dilated`.

Scope: NHWC inputs, HWIO kernels, any strides and explicit padding, no input/kernel dilation, one
feature group (every convolution of this package's models). Anything else falls back to
`lax.conv_general_dilated` unchanged. The kernel gradient is autodiff's (it is computed outside
attack loops).
"""
import functools

import jax
from flax import nnx
from jax import lax

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                 out_spec=(0, 3, 1, 2))


def _is_nhwc_hwio(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(map(tuple, dimension_numbers)) == tuple(map(tuple, _NHWC))
  return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")


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
def _conv_with_fast_input_grad(strides: tuple, padding: tuple, precision):
  dn = ("NHWC", "HWIO", "NHWC")

  def forward(x, k):
    return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=dn,
                                    precision=precision)

  @jax.custom_vjp
  def conv(x, k):
    return forward(x, k)

  def conv_fwd(x, k):
    return forward(x, k), (x, k)

  def conv_bwd(res, g):
    x, k = res
    kh, kw = k.shape[0], k.shape[1]
    pads = [_input_grad_padding(n, kk, s, p)
            for n, kk, s, p in zip(x.shape[1:3], (kh, kw), strides, padding)]
    # Flip spatially and swap in/out features: a plain HWIO kernel from C_out to C_in.
    k_t = lax.rev(k, (0, 1)).transpose(0, 1, 3, 2)
    dx = lax.conv_general_dilated(g, k_t, (1, 1), pads, lhs_dilation=strides,
                                  dimension_numbers=dn, precision=precision)
    _, kernel_vjp = jax.vjp(lambda kk: forward(x, kk), k)
    (dk,) = kernel_vjp(g)
    return dx.astype(x.dtype), dk

  conv.defvjp(conv_fwd, conv_bwd)
  return conv


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """Drop-in for `lax.conv_general_dilated` (same arguments) with a loop-friendly input VJP.

  Args:
    lhs: [B,H,W,C_in] inputs.
    rhs: [kh,kw,C_in,C_out] kernel.
    window_strides: 2 ints. padding: 2 (lo, hi) pairs (strings fall back to lax).
  Returns:
    [B,H',W',C_out], identical to `lax.conv_general_dilated`.
  """
  plain = (lhs_dilation is None or tuple(lhs_dilation) == (1, 1)) and (
      rhs_dilation is None or tuple(rhs_dilation) == (1, 1))
  extra = {k: v for k, v in kwargs.items() if v is not None}
  if (not plain or feature_group_count != 1 or isinstance(padding, str) or extra
      or lhs.ndim != 4 or not _is_nhwc_hwio(dimension_numbers)):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision,
                                    **kwargs)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  strides = tuple(int(s) for s in window_strides)
  pads = [_input_grad_padding(n, kk, s, p)
          for n, kk, s, p in zip(lhs.shape[1:3], rhs.shape[:2], strides, padding)]
  if any(p < 0 for pair in pads for p in pair):  # exotic over-padding: keep autodiff's rule
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision,
                                    **kwargs)
  return _conv_with_fast_input_grad(strides, padding, precision)(lhs, rhs)


def use_fast_convs(model, enabled: bool = True):
  """Switches every `nnx.Conv` of `model` between this module's conv and plain `lax`, in place.

  For checks and benchmarks that the optimised path changes no result. Returns `model`.
  """
  fn = conv_general_dilated if enabled else lax.conv_general_dilated
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.Conv):
      module.conv_general_dilated = fn
  return model
