"""Pure per-example loss functions on logits (no reduction unless stated).

    per_example = losses.era(nat_logits, adv_logits, labels, beta=1.0)   # [B]
    loss = per_example.mean()

Conventions: ``logits`` are ``[B, C]`` float arrays, ``labels`` are ``[B]`` int32, and every
function returns a ``[B]`` array of per-example losses; the caller chooses the batch reduction
(the paper and the authors' code take the batch mean). ``F(x) = argmax f(x)``; ``p = softmax(f)``.
Where the authors' code differs from the paper (docs/design.md, appendix A1, A2, A10), a keyword
argument reproduces the code, and the default follows the paper.
"""
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from jax_abstain.errors import UserError


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``CE(f, y) = -log softmax(f)_y``; logits [B, C], labels [B] -> [B]."""
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]


def kl_divergence(p_logits: jax.Array, q_logits: jax.Array, *, reduction: str = "sum") -> jax.Array:
  """``KL(p || q) = sum_c p_c (log p_c - log q_c)`` with ``p = softmax(p_logits)``.

  Args:
    p_logits, q_logits: [B, C].
    reduction: ``"sum"`` over classes (the divergence itself, the TRADES paper's choice) or
      ``"mean"`` over classes, i.e. KL / C, which is what PyTorch's ``kl_div(reduction='none')``
      followed by ``.mean(1)`` gives inside the authors' ERA code (docs/design.md, appendix A1).

  Returns:
    [B] divergences; gradients flow through both arguments.
  """
  log_p = jax.nn.log_softmax(p_logits, axis=-1)
  log_q = jax.nn.log_softmax(q_logits, axis=-1)
  terms = jnp.exp(log_p) * (log_p - log_q)
  if reduction == "sum":
    return terms.sum(-1)
  if reduction == "mean":
    return terms.mean(-1)
  raise ValueError(f"kl reduction must be 'sum' or 'mean', got {reduction!r}")


def trades(nat_logits, adv_logits, labels, *, beta: float = 6.0, kl_reduction: str = "sum"):
  """TRADES (Zhang et al. 2019; paper eq. 5): ``CE(f(x), y) + beta * KL(p(x) || p(x'))``.

  The KL has the clean distribution first (PyTorch's ``kl_div(log_softmax(adv), softmax(nat))``).
  `x'` should maximise that KL (see `attacks.pgd(..., loss="kl")`). Returns [B].
  """
  return cross_entropy(nat_logits, labels) + beta * kl_divergence(
      nat_logits, adv_logits, reduction=kl_reduction)


def check_classes(logits: jax.Array, need: int, what: str) -> None:
  """Raises a one-line `UserError` at trace time (C is static) when logits [..., C] have fewer
  than `need` classes: a loss that reads the best class other than y, or the top two, is
  undefined on fewer (a masked argmax over nothing returns the excluded class itself)."""
  if logits.shape[-1] < need:
    raise UserError(f"{what}: needs logits for >= {need} classes, got {logits.shape[-1]}")


def top_other_class(logits: jax.Array, excluded: jax.Array) -> jax.Array:
  """``argmax_{c != excluded} logits_c`` per row; logits [B, C] (C >= 2), excluded [B] -> [B]
  int32.

  Raises:
    UserError: C < 2 (there is no other class).
  """
  check_classes(logits, 2, "the best class other than y")
  masked = jnp.where(jax.nn.one_hot(excluded, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.argmax(masked, axis=-1).astype(jnp.int32)


def soft_inaccuracy(nat_logits: jax.Array, labels: jax.Array, *, soft: bool = True) -> jax.Array:
  """Qualifier of inaccuracy: soft ``1 - p(x)_y`` (paper section 4.1) or hard ``1{F(x) != y}``.

  The soft qualifier is *not* detached: like the authors' code, its gradient lowers the
  weight of the robust-inaccuracy penalty by making the clean prediction more accurate.
  """
  if soft:
    p_y = jnp.take_along_axis(jax.nn.softmax(nat_logits, -1), labels[:, None], -1)[:, 0]
    return 1.0 - p_y
  return (jnp.argmax(nat_logits, -1) != labels).astype(nat_logits.dtype)


def robust_inaccuracy_penalty(nat_logits, adv_logits, labels, *, soft: bool = True):
  """The ERA penalty ``(1 - p(x)_y) * CE(f(x'), argmax_{c != F(x)} f(x')_c)`` (eq. 4, 6).

  The adversarial target is chosen from the adversarial logits, excluding the clean prediction
  F(x) (not the label y). Minimising it pushes x' across the boundary, i.e. makes inaccurate
  points non-robust. Returns [B].
  """
  clean_pred = jnp.argmax(nat_logits, -1)
  target = top_other_class(adv_logits, clean_pred)
  return soft_inaccuracy(nat_logits, labels, soft=soft) * cross_entropy(adv_logits, target)


def era(nat_logits, adv_logits, labels, *, beta: float, trades_beta: float = 6.0,
        kl_reduction: str = "sum", soft: bool = True, trades_adv_logits=None):
  """L_ERA (paper eq. 4): ``beta * L_TRADES + (1 - p(x)_y) * CE(f(x'), c*)``.

  Args:
    nat_logits: clean logits f(x), [B, C].
    adv_logits: f(x') at the point that minimises the penalty CE (eq. 6), [B, C].
    labels: [B] int32.
    beta: weight of the TRADES term (it multiplies TRADES, as in eq. 4 and the code).
    trades_beta: the KL weight inside TRADES (6.0).
    kl_reduction: ``"sum"`` (paper) or ``"mean"`` (authors' code: KL / C).
    soft: soft qualifier ``1 - p_y`` (paper, code) or hard ``1{F(x) != y}``.
    trades_adv_logits: f(x'') at a KL-maximising point for the TRADES term (paper eq. 5); if
      None, `adv_logits` is used for both terms, as in the authors' code.

  Returns:
    [B] per-example losses.
  """
  trades_adv = adv_logits if trades_adv_logits is None else trades_adv_logits
  return beta * trades(nat_logits, trades_adv, labels, beta=trades_beta, kl_reduction=kl_reduction) + \
      robust_inaccuracy_penalty(nat_logits, adv_logits, labels, soft=soft)


def dga(nat_logits, adv_logits, labels, *, beta: float, trades_beta: float = 6.0,
        kl_reduction: str = "sum", joint_softmax: bool = False, conf: float = 1.0,
        trades_adv_logits=None):
  """L_DGA (paper eq. 18): ``beta * L_TRADES - log(p(x)_y + max_{c != F(x)} p(x')_c)``.

  With ``joint_softmax=True`` the authors' code is reproduced instead (docs/design.md, appendix
  A1): one (C+1)-way softmax over ``[f(x)_1..f(x)_C, f(x')_{c*}]`` gives ``q``, and the penalty
  is ``-log(conf * q_y + q_{C+1})``. The paper's sum of two probabilities can exceed 1, so its
  log can go negative; that is the paper's formula and is kept as written. Returns [B].
  """
  trades_adv = adv_logits if trades_adv_logits is None else trades_adv_logits
  rob = trades(nat_logits, trades_adv, labels, beta=trades_beta, kl_reduction=kl_reduction)
  target = top_other_class(adv_logits, jnp.argmax(nat_logits, -1))
  if joint_softmax:
    adv_target_logit = jnp.take_along_axis(adv_logits, target[:, None], -1)
    q = jax.nn.softmax(jnp.concatenate([nat_logits, adv_target_logit], -1), -1)
    q_y = jnp.take_along_axis(q, labels[:, None], -1)[:, 0]
    penalty = -jnp.log(conf * q_y + q[:, -1])
  else:
    p_y = jnp.take_along_axis(jax.nn.softmax(nat_logits, -1), labels[:, None], -1)[:, 0]
    p_adv = jnp.take_along_axis(jax.nn.softmax(adv_logits, -1), target[:, None], -1)[:, 0]
    penalty = -jnp.log(p_y + p_adv)
  return beta * rob + penalty


def mart(nat_logits, adv_logits, labels, *, beta: float = 6.0):
  """MART (Wang et al. 2020): ``BCE(p(x'), y) + beta * KL(p(x) || p(x')) * (1 - p(x)_y)``.

  ``BCE = -log p(x')_y - log(1 - max_{c != y} p(x')_c)`` (boosted CE). `x'` is a CE-PGD point
  away from y. Returns [B].
  """
  p_adv = jax.nn.softmax(adv_logits, -1)
  other = top_other_class(adv_logits, labels)
  p_other = jnp.take_along_axis(p_adv, other[:, None], -1)[:, 0]
  bce = cross_entropy(adv_logits, labels) - jnp.log(jnp.clip(1.0 - p_other, 1e-12))
  return bce + beta * kl_divergence(nat_logits, adv_logits) * soft_inaccuracy(nat_logits, labels)


def noise(noisy_logits: jax.Array, labels: jax.Array) -> jax.Array:
  """L_noise (paper eq. 8, Cohen et al.): ``CE(f(x + eta), y)``, ``eta ~ N(0, sigma^2 I)``.

  Args:
    noisy_logits: [B, C] logits of one noisy copy per input (eq. 8 as written), or [K, B, C]
      logits of K i.i.d. copies, whose mean CE is the K-sample Monte Carlo estimate of the
      same expectation ``E_eta CE(f(x + eta), y)`` (same mean, lower variance).
    labels: [B] int32.

  Returns:
    [B] per-example losses.
  """
  if noisy_logits.ndim == 3:
    return jax.vmap(cross_entropy, in_axes=(0, None))(noisy_logits, labels).mean(0)
  return cross_entropy(noisy_logits, labels)


_PHI_INV_EPS = 1e-6


def _safe_ndtri(p: jax.Array) -> jax.Array:
  # Phi^-1 is infinite at 0 and 1 and its gradient blows up near them; clamping keeps both the
  # value and the gradient finite where the smoothed probabilities saturate (zero gradient
  # outside the clamp, exactly like the code's +-1e-6 shift plus a bound).
  return ndtri(jnp.clip(p, _PHI_INV_EPS, 1.0 - _PHI_INV_EPS))


def certified_radius(noisy_logits: jax.Array, labels: jax.Array, *, sigma: float,
                     gamma: float = 4.0, top_two: bool = False) -> jax.Array:
  """Differentiable certified radius (paper eq. 9, MACER's soft radius).

  ``CR = sigma/2 * (Phi^-1(q_y) - Phi^-1(max_{y' != y} q_y'))`` with
  ``q = mean_j softmax(gamma * f(x + eta_j))``.

  Args:
    noisy_logits: [K, B, C] logits of K noisy copies of each input.
    labels: [B].
    sigma: noise standard deviation.
    gamma: inverse softmax temperature (4.0).
    top_two: reproduce the authors' code: the two largest entries of q whatever y is
      (``q(1) - 1e-6``, ``q(2) + 1e-6``), so CR >= 0 and, when the top class is not y, it is the
      radius of the wrong prediction (docs/design.md, appendix A2).

  Returns:
    [B] radii (may be negative with the paper's formula when y is not the top class).
  """
  check_classes(noisy_logits, 2, "certified_radius")
  q = jax.nn.softmax(gamma * noisy_logits, axis=-1).mean(0)
  if top_two:
    top2 = jax.lax.top_k(q, 2)[0]
    return sigma / 2.0 * (_safe_ndtri(top2[:, 0] - 1e-6) - _safe_ndtri(top2[:, 1] + 1e-6))
  q_y = jnp.take_along_axis(q, labels[:, None], -1)[:, 0]
  q_other = jnp.take_along_axis(q, top_other_class(q, labels)[:, None], -1)[:, 0]
  return sigma / 2.0 * (_safe_ndtri(q_y) - _safe_ndtri(q_other))


def cra(noisy_logits: jax.Array, labels: jax.Array, *, sigma: float, beta: float = 1.0,
        gamma: float = 4.0, code_variant: bool = False) -> jax.Array:
  """L_CRA (paper eq. 7): ``beta * L_noise + mean_j(1 - p(x + eta_j)_y) * CR``.

  Args:
    noisy_logits: [K, B, C] logits of K i.i.d. noisy copies (eta ~ N(0, sigma^2 I)).
    labels: [B].
    sigma, gamma: noise level and inverse temperature of the radius (eq. 9).
    beta: weight of L_noise (paper 1.0; the authors' script 0.75 with decay).
    code_variant: reproduce the authors' code (docs/design.md, appendix A2): L_noise is the CE
      of the noise-*averaged logits*, the radius uses the top-two smoothed probabilities. Otherwise
      the paper: L_noise is the mean CE over the K noisy copies (each an unbiased eq. 8 sample)
      and the radius is eq. 9.

  Eq. 9 as printed is the radius of class y. On a misclassified point it is negative, so
  minimising ``p_inacc * CR`` pushes q_y further down and makes the wrong prediction *more*
  robust; only the code's top-two radius (the radius of the smoothed prediction) penalises
  robust inaccuracy (tests/smoothing_test.py checks both directions). Phi^-1 sees
  probabilities clamped to [1e-6, 1 - 1e-6], so values and gradients stay finite where the
  smoothed probabilities saturate (the gradient is zero beyond the clamp).

  Returns:
    [B] per-example losses.
  """
  probs = jax.nn.softmax(noisy_logits, -1)
  p_inacc = 1.0 - jnp.take_along_axis(probs.mean(0), labels[:, None], -1)[:, 0]
  radius = certified_radius(noisy_logits, labels, sigma=sigma, gamma=gamma, top_two=code_variant)
  if code_variant:
    classification = cross_entropy(noisy_logits.mean(0), labels)
  else:
    classification = noise(noisy_logits, labels)
  return p_inacc * radius + beta * classification
