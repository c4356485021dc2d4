"""Randomized smoothing (Cohen et al. 2019): sampling, PREDICT, CERTIFY, sequential CERTIFY.

    from jax_abstain import smoothing
    pred, radius = smoothing.certify(logits_fn, x, key=jax.random.key(0), sigma=0.12)  # [B], [B]
    linf = smoothing.linf_radius(radius, x.shape[1:])                                 # L2 / sqrt(d)
    res = smoothing.certify_at_radius(logits_fn, x, 0.25, key=key, sigma=0.12)       # early stop
    res.certified, res.pred, res.num_draws                                            # [B] each

The smoothed classifier is ``G(x) = argmax_c P(F(x + eta) = c)``, ``eta ~ N(0, sigma^2 I)``,
``F = argmax logits_fn``. The model is taken in once per call: an NNX module, in whatever
mode, runs as an eval-mode copy and is never changed (`validation.inference_model`); its logits
must be [M, C] with C >= 2, and a noisy copy with NaN or inf logits is refused rather than
counted for an arbitrary class. `certify` returns Cohen's CERTIFY: pick ``cA`` from n0 draws, count it
in n fresh draws, take the one-sided Clopper-Pearson lower bound ``pA_lower`` at level
``1 - alpha`` and return ``R = sigma * Phi^-1(pA_lower)`` (L2), or abstain (``pred = -1``,
``R = 0``) when ``pA_lower < 1/2``. Noise is not clamped to [0, 1], as in Cohen's code.

Randomness: draw ``j`` of stream ``s`` (0 = selection, 1 = estimation) is the noise
``eta_j = sigma * N(0, I)`` drawn from ``fold_in(fold_in(key, s), j)``, one noise tensor shared
by every input certified with the same key. Counts therefore depend neither on
``batch_size``, nor on how inputs are grouped or split over devices and hosts, nor on
resuming; and one noise draw serves a whole batch of inputs (most of the sampling cost on
small models; BENCHMARKS.md, certify section).

Why each certificate keeps its guarantee with shared noise (docs/design.md, "Certification at
scale"): for one input x, its draws ``eta_1..eta_n`` come from n distinct keys and are i.i.d.
``N(0, sigma^2 I)``, independent of x and of its n0 selection draws (another stream), so
``nA ~ Binomial(n, pA(x))`` given cA exactly as in Cohen et al.'s CERTIFY, and the
Clopper-Pearson bound holds for that certificate with probability >= 1 - alpha. Sharing the
draws across inputs only makes the certificates of different inputs dependent; a statement
about one certificate, or the expected number of wrong certificates among N (<= alpha N by
linearity), is unchanged. (Before, noise was keyed per sample; the certificates of a given key
therefore differ from those of earlier versions, and reports record the scheme.)

`logits_fn` is either a callable ``[M, ...] -> [M, C]`` (pass the same object every call to
reuse the compiled code) or an NNX module, which then enters jit as ``(graphdef, state)``.
Batches of inputs are split over the local devices (`devices.local_mesh`).
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import stats

from jax_abstain import devices, validation
from jax_abstain.errors import UserError

ABSTAIN = -1
# Draws of each input per forward pass when batching inputs: a batch of `batch_size` noisy
# inputs holds batch_size // IMAGE_DRAWS inputs (at least one).
IMAGE_DRAWS = 100


def _check_positive_int(value, name):
  validation.check_int(value, name, minimum=1)


def check_args(*, sigma=1.0, alpha=0.5, n0=1, n=1, batch_size=1) -> None:
  """Raises a one-line `UserError` naming the first bad argument."""
  validation.check_sigma(sigma)
  validation.check_alpha(alpha)
  for value, name in ((n0, "n0"), (n, "n"), (batch_size, "batch_size")):
    _check_positive_int(value, name)


def check_inputs(x) -> np.ndarray:
  """x as float32 numpy [B, ...]; raises `UserError` for NaN/inf or values outside [0, 1]."""
  return np.asarray(validation.check_images(x, "x"), np.float32)


def _split_model(logits_fn, x):
  """(fn, graphdef, state) of the model taken in on inputs x [B, ...]: an NNX module becomes
  an eval-mode copy (`validation.inference_model`; the caller's module is never changed) that
  crosses into jit as state, not baked-in constants; its logits must be [M, C] with C >= 2.

  Raises:
    UserError: a forward pass that changes state, or an output that is not [M, C], C >= 2.
  """
  fn, out = validation.inference_model(logits_fn, jnp.asarray(x[:1]), name="smoothing: model")
  validation.check_logits(out, n=len(x[:1]), name="smoothing: model")
  if isinstance(fn, nnx.Module):
    graphdef, state = nnx.split(fn)
    return None, graphdef, state
  return fn, None, None


@functools.partial(jax.jit, static_argnames=("fn", "graphdef", "chunk"))
def _count_range(fn, graphdef, state, x, key, start, stop, sigma, *, chunk):
  """Class counts [G, C] of ``F(x_g + eta_j)`` for draws ``start <= j < stop`` of every input
  x_g of x [G, ...], and [G] the number of those draws whose logits were not finite (argmax
  would count them for an arbitrary class).

  Draw j is ``eta_j = sigma * N(0, I)`` from ``fold_in(key, j)``, the same for every input of
  the batch (module docstring: why each certificate keeps its guarantee). Each forward pass
  takes ``chunk`` draws of every input, [G * chunk, ...] rows, split over the devices with x;
  the padding of the last chunk is evaluated but not counted.
  """
  apply = fn if graphdef is None else (lambda z: nnx.merge(graphdef, state)(z))
  num_classes = jax.eval_shape(apply, x[:1]).shape[-1]
  g = x.shape[0]

  def body(c, carry):
    counts, bad = carry
    j = start + c * chunk + jnp.arange(chunk)
    noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), x.shape[1:],
                                                 x.dtype))(j)
    noisy = (x[:, None] + sigma * noise[None]).reshape(g * chunk, *x.shape[1:])
    logits = apply(noisy).reshape(g, chunk, -1)
    valid = (j < stop).astype(jnp.int32)
    bad = bad + jnp.sum(valid * ~jnp.all(jnp.isfinite(logits), axis=-1), axis=1)
    hits = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.int32)
    return counts + jnp.einsum("gjc,j->gc", hits, valid), bad

  num_chunks = (stop - start + chunk - 1) // chunk
  return jax.lax.fori_loop(0, num_chunks, body,
                           (jnp.zeros((g, num_classes), jnp.int32), jnp.zeros((g,), jnp.int32)))


def images_per_device(batch_size: int) -> int:
  """Inputs certified together on each device: ``batch_size // IMAGE_DRAWS``, at least 1."""
  return max(1, int(batch_size) // IMAGE_DRAWS)


class _Sampler:
  """Counts for one model: ``counts(x [B, ...], indices, stream, key, start, stop) -> [B, C]``.

  The inputs go through in groups of `group`: ``batch_size // IMAGE_DRAWS`` (at least 1, at
  most the inputs' share) inputs on each local device, padded by repeating the first input, split over the devices
  (`devices.split_rows`) with the weights replicated; each device's forward pass holds
  ``batch_size`` noisy inputs or fewer (at least one draw per input), the same shape on any
  number of devices.
  """

  def __init__(self, logits_fn, sigma, batch_size, x):
    self.fn, self.graphdef, state = _split_model(logits_fn, x)
    self.mesh = devices.local_mesh()
    self.state = None if state is None else devices.replicate(self.mesh, state)
    self.sigma, self.batch_size = float(sigma), int(batch_size)
    # Fewer inputs than that: no padding beyond one per device (a report passes whole groups,
    # so its shapes are the same on any number of devices, `evaluation.certified`).
    per_device = min(images_per_device(self.batch_size), -(-len(x) // self.mesh.size))
    self.group = per_device * self.mesh.size
    self.draws = max(1, self.batch_size // per_device)

  def counts(self, x, indices, stream, key, start, stop) -> np.ndarray:
    out = []
    for lo in range(0, len(x), self.group):
      out.append(self._group(x[lo:lo + self.group], indices[lo:lo + self.group], stream, key,
                             start, stop))
    return np.concatenate(out)

  def _group(self, x, indices, stream, key, start, stop):
    m = len(x)
    xb = devices.split_rows(self.mesh, np.concatenate([x, np.repeat(x[:1], self.group - m, 0)]))
    # Chunks never exceed the draws asked for, so short looks do not pay for padding.
    out, bad = _count_range(self.fn, self.graphdef, self.state, xb,
                            jax.random.fold_in(key, stream), start, stop, self.sigma,
                            chunk=min(self.draws, stop - start))
    bad = np.asarray(bad)[:m]
    if bad.any():
      first = int(np.flatnonzero(bad)[0])
      raise UserError(f"smoothing: model: returns NaN or inf logits for {int(bad[first])} of "
                      f"{stop - start} noisy copies of sample {int(indices[first])}")
    return np.asarray(out, np.int64)[:m]


def sample(logits_fn, x, num: int, *, key, sigma: float, batch_size: int = 1000,
           indices=None, stream: int = 1) -> np.ndarray:
  """Class counts of the base classifier under Gaussian noise.

  Args:
    logits_fn: callable ``[M, ...] -> [M, C]`` logits, or an NNX module (eval mode).
    x: [B, ...] inputs in [0, 1].
    num: noisy draws per input.
    key: PRNG key; draw j of `stream` is ``fold_in(fold_in(key, stream), j)`` for every input.
    sigma: noise standard deviation (> 0).
    batch_size: noisy inputs per forward pass (inputs batched together, module docstring).
    indices: [B] sample indices (default ``0..B-1``), named in errors.
    stream: 0 for CERTIFY's selection draws, 1 for its estimation draws.

  Returns:
    [B, C] int64 counts, each row summing to `num`.
  """
  check_args(sigma=sigma, n=num, batch_size=batch_size)
  x = check_inputs(x)
  indices = np.arange(len(x)) if indices is None else np.asarray(indices)
  return _Sampler(logits_fn, sigma, batch_size, x).counts(x, indices, stream, key, 0, num)


def lower_confidence_bound(successes, trials, alpha):
  """One-sided Clopper-Pearson lower bound: ``P(p >= bound) >= 1 - alpha``.

  ``Beta(alpha; k, n - k + 1)`` quantile, 0 for k = 0; equals statsmodels'
  ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]`` that Cohen's code uses.
  Works elementwise on numpy arrays.
  """
  k, n = np.asarray(successes, float), np.asarray(trials, float)
  with np.errstate(invalid="ignore"):
    bound = stats.beta.ppf(alpha, k, n - k + 1)
  return np.where(k > 0, bound, 0.0)


def upper_confidence_bound(successes, trials, alpha):
  """One-sided Clopper-Pearson upper bound ``Beta(1 - alpha; k + 1, n - k)``, 1 for k = n."""
  k, n = np.asarray(successes, float), np.asarray(trials, float)
  with np.errstate(invalid="ignore"):
    bound = stats.beta.ppf(1.0 - alpha, k + 1, n - k)
  return np.where(k < n, bound, 1.0)


def linf_radius(l2_radius, input_shape):
  """The L-inf reading of an L2 radius, ``R / sqrt(d)`` with d = prod(input_shape).

  An L-inf ball of radius r lies inside the L2 ball of radius ``r * sqrt(d)``; this is the
  conversion the authors' eval/cert.py uses.
  """
  return np.asarray(l2_radius, float) / math.sqrt(int(np.prod(input_shape)))


def predict(logits_fn, x, *, key, sigma: float, n: int = 100_000, alpha: float = 0.001,
            batch_size: int = 1000, indices=None) -> np.ndarray:
  """Cohen's PREDICT: the top class, or abstain (-1) unless it beats the runner-up.

  The two-sided binomial test of ``nA`` against ``nA + nB`` at p = 1/2 (scipy `binomtest`)
  must reject at level alpha; then G(x) = cA with probability >= 1 - alpha.

  Returns:
    [B] int predictions, -1 for abstain.
  """
  check_args(sigma=sigma, alpha=alpha, n=n, batch_size=batch_size)
  counts = sample(logits_fn, x, n, key=key, sigma=sigma, batch_size=batch_size,
                  indices=indices, stream=1)
  preds = []
  for row in counts:
    order = np.argsort(-row, kind="stable")
    n_a, n_b = int(row[order[0]]), int(row[order[1]]) if len(row) > 1 else 0
    p_value = stats.binomtest(n_a, n_a + n_b, 0.5).pvalue
    preds.append(int(order[0]) if p_value <= alpha else ABSTAIN)
  return np.asarray(preds, np.int64)


def certify(logits_fn, x, *, key, sigma: float, n0: int = 100, n: int = 100_000,
            alpha: float = 0.001, batch_size: int = 1000, indices=None):
  """Cohen's CERTIFY with an L2 radius.

  ``cA = argmax counts(n0 selection draws)``; ``nA = counts(n estimation draws)[cA]``;
  ``pA_lower = CP_lower(nA, n, alpha)``; pred cA and ``R = sigma * Phi^-1(pA_lower)`` if
  ``pA_lower >= 1/2``, else pred -1 and R = 0. With probability >= 1 - alpha (over the noise),
  a returned cA is G's prediction everywhere in the L2 ball of radius R.

  Args:
    logits_fn: callable ``[M, ...] -> [M, C]`` or NNX module (eval mode).
    x: [B, ...] inputs in [0, 1].
    key: PRNG key; the noise of draw j is shared by the inputs (module docstring).
    sigma: noise standard deviation (> 0), the same as in training.
    n0, n: selection and estimation draws (>= 1).
    alpha: failure probability in (0, 1).
    batch_size: noisy inputs per forward pass and device, ``batch_size // 100`` inputs at a
      time on each device (does not change the result).
    indices: [B] sample indices named in errors (default ``0..B-1``).

  Returns:
    (pred [B] int64 with -1 = abstain, radius [B] float64 >= 0, L2).
  """
  check_args(sigma=sigma, alpha=alpha, n0=n0, n=n, batch_size=batch_size)
  x = check_inputs(x)
  indices = np.arange(len(x)) if indices is None else np.asarray(indices)
  sampler = _Sampler(logits_fn, sigma, batch_size, x)
  c_a = np.argmax(sampler.counts(x, indices, 0, key, 0, n0), axis=1)
  n_a = np.take_along_axis(sampler.counts(x, indices, 1, key, 0, n), c_a[:, None], 1)[:, 0]
  p_lower = lower_confidence_bound(n_a, n, alpha)
  ok = p_lower >= 0.5
  radius = np.where(ok, sigma * stats.norm.ppf(np.where(ok, p_lower, 0.5)), 0.0)
  return np.where(ok, c_a, ABSTAIN).astype(np.int64), radius.astype(np.float64)


def look_schedule(n: int, first: int = 100, growth: float = 2.0) -> tuple:
  """Sample sizes of the looks: first, first*growth, ... (rounded), always ending at n."""
  _check_positive_int(first, "first_look")
  if not growth > 1.0:
    raise UserError(f"growth: expected a factor > 1, got {growth!r}")
  looks, m = [], float(first)
  while m < n:
    looks.append(int(round(m)))
    m *= growth
  return tuple(sorted(set(looks))) + (n,)


def alpha_spending(num_looks: int, alpha: float) -> np.ndarray:
  """Per-look levels: alpha/2 at the last look, alpha/2 shared equally by the earlier ones."""
  if num_looks == 1:
    return np.asarray([alpha])
  return np.asarray([alpha / (2 * (num_looks - 1))] * (num_looks - 1) + [alpha / 2])


@dataclasses.dataclass(frozen=True)
class SequentialResult:
  """Outcome of `certify_at_radius`, one entry per input."""
  certified: np.ndarray   # [B] bool: G is certified at L2 radius >= eps
  pred: np.ndarray        # [B] int64: cA where certified, else -1
  num_draws: np.ndarray   # [B] int64: noisy forward passes used (n0 + estimation draws)


def certify_at_radius(logits_fn, x, eps: float, *, key, sigma: float, n0: int = 100,
                      n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
                      first_look: int = 100, growth: float = 2.0, indices=None):
  """Sequential CERTIFY that stops once "is the radius >= eps?" is settled.

  Statistics. "radius >= eps" means ``pA_lower >= p* = Phi(eps / sigma)``. cA is chosen from
  n0 draws as in `certify`; the estimation draws are then inspected at a fixed schedule of
  looks ``n_1 < ... < n_K = n`` (`look_schedule`), look k at level alpha_k with
  ``sum_k alpha_k = alpha`` (`alpha_spending`: alpha/2 at n, alpha/2 over the rest).
  * Certify at look k if ``CP_lower(nA_k, n_k, alpha_k) >= p*``. By the union bound over the
    K looks, P(some look's lower bound exceeds the true pA) <= sum alpha_k = alpha, so a
    returned certificate is wrong with probability <= alpha, the guarantee of `certify`.
  * Stop without a certificate if ``CP_upper(nA_k, n_k, alpha_k) < p*`` (then pA < p* up to
    probability alpha_k) or if even ``nA_k + (n - n_k)`` successes could not certify at the
    last look. Refusing costs no soundness, only power.
  Against `certify` at the same alpha, the last look uses alpha/2, so inputs whose radius is
  within a hair of eps may lose their certificate; elsewhere the decisions agree.

  Args:
    logits_fn, x, key, sigma, n0, n, alpha, batch_size, indices: as in `certify`; the draws
      are the same as `certify`'s (same keys), so a look at n_K = n sees its exact counts.
    eps: L2 radius to certify (> 0); one that covers the whole input box, eps >= sqrt(d),
      warns (`validation.check_radius_in_box`).
    first_look, growth: the schedule of looks.

  Returns:
    `SequentialResult`.
  """
  check_args(sigma=sigma, alpha=alpha, n0=n0, n=n, batch_size=batch_size)
  eps = validation.check_radius(eps, "eps")
  x = check_inputs(x)
  validation.check_radius_in_box(eps, "l2", int(np.prod(x.shape[1:])), "eps")
  indices = np.arange(len(x)) if indices is None else np.asarray(indices)
  looks = look_schedule(n, first_look, growth)
  levels = alpha_spending(len(looks), alpha)
  p_star = float(stats.norm.cdf(eps / sigma))
  # Smallest successes out of n that certify at the last look: lower bounds grow with k.
  need_last = np.searchsorted(lower_confidence_bound(np.arange(n + 1), n, levels[-1]) >= p_star,
                              True)
  sampler = _Sampler(logits_fn, sigma, batch_size, x)
  c_a = np.argmax(sampler.counts(x, indices, 0, key, 0, n0), axis=1)
  n_a, done = np.zeros(len(x), np.int64), np.zeros(len(x), np.int64)
  certified, active, start = np.zeros(len(x), bool), np.ones(len(x), bool), 0
  for n_k, a_k in zip(looks, levels):   # every input still undecided takes the same look
    todo = np.flatnonzero(active)
    if not todo.size:
      break
    counts = sampler.counts(x[todo], indices[todo], 1, key, start, n_k)
    n_a[todo] += counts[np.arange(todo.size), c_a[todo]]
    done[todo], start = n_k, n_k
    certified[todo] = lower_confidence_bound(n_a[todo], n_k, a_k) >= p_star
    hopeless = ((upper_confidence_bound(n_a[todo], n_k, a_k) < p_star)
                | (n_a[todo] + (n - n_k) < need_last))
    active[todo] = ~certified[todo] & ~hopeless
  return SequentialResult(certified, np.where(certified, c_a, ABSTAIN).astype(np.int64),
                          (n0 + done).astype(np.int64))
