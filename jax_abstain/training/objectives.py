"""The training objectives by name: one small function per loss of the paper (eq. 4-9).

    objective = objectives.OBJECTIVES[cfg.loss]
    per_example, nat_logits, new_rest = objective(batch)      # batch: an `objectives.Batch`

Every objective takes a `Batch` (the inputs, the per-example keys, the traced beta, and the
model's two forwards) and returns the per-example loss [B], the logits used for the accuracy
metric [B, C] and the model state after the loss's forward passes. The formulas are in
`jax_abstain.losses`; an objective only decides which points the model sees. Adversarial
points come from PGD on the frozen parameters in ``cfg.bn_attack`` mode, with stopped
gradients (the attack is not differentiated through); the loss's own forwards run in
``cfg.bn_loss`` mode. `training.step.make_loss_fn` builds the `Batch` and averages.

The certified objectives (``noise``, ``cra``; paper eq. 7-9) draw ``cfg.noise_draws`` Gaussian
copies ``x + eta`` (1 for ``noise``, 16 for ``cra`` by default, as the authors), eta ~ N(0, sigma^2 I), per input, unclamped as in the authors' code, and
forward them as one batch of K*B inputs; only the noisy copies are forwarded (no clean pass
that would move BN statistics).
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jax_abstain import attacks, ibp as ibp_lib, losses
from jax_abstain.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Batch:
  """What an objective sees of one training batch (inside `jax.jit` and `jax.grad`).

  Attributes:
    cfg: the checked settings.
    x: inputs [B, ...] in [0, 1]; y: labels [B] int32.
    keys: two [B] per-example key streams (``fold_in(example_key, 1)`` and ``..., 2)``).
    beta: ``cfg.beta`` times the epoch's decay factor (a traced scalar).
    scale: that factor, or the eps/kappa ramp of ``ibp`` in [0, 1] (`step.loss_scale`).
    rest: the model's non-parameter state (batch statistics) before the step.
    forward: ``(x, rest) -> (logits, new_rest)`` with the trained parameters, ``bn_loss`` mode.
    attack_logits: ``x -> logits`` with frozen parameters and state, ``bn_attack`` mode.
  """
  cfg: TrainConfig
  x: jax.Array
  y: jax.Array
  keys: tuple
  beta: jax.Array
  scale: jax.Array
  rest: dict
  forward: Callable
  attack_logits: Callable

  def pgd(self, labels, key, loss: str, start: str = "uniform") -> jax.Array:
    """PGD points around ``x`` (training radius, steps and step size), gradient stopped."""
    c = self.cfg
    return jax.lax.stop_gradient(attacks.pgd(
        self.attack_logits, self.x, labels, key=key, eps=c.eps, norm=c.norm,
        n_iter=c.attack_steps, rel_step=c.attack_rel_step, loss=loss, start=start))


def std(b: Batch):
  """Cross-entropy on clean inputs."""
  nat, rest = b.forward(b.x, b.rest)
  return losses.cross_entropy(nat, b.y), nat, rest


def trades(b: Batch):
  """TRADES (Zhang et al. 2019): CE + trades_beta KL at the KL-maximising PGD point."""
  nat, rest = b.forward(b.x, b.rest)
  adv, rest = b.forward(b.pgd(b.y, b.keys[0], "kl", start="normal"), rest)
  return losses.trades(nat, adv, b.y, beta=b.cfg.trades_beta), nat, rest


def mart(b: Batch):
  """MART (Wang et al. 2020) at the CE-maximising PGD point."""
  nat, rest = b.forward(b.x, b.rest)
  adv, rest = b.forward(b.pgd(b.y, b.keys[0], "ce"), rest)
  return losses.mart(nat, adv, b.y, beta=b.cfg.trades_beta), nat, rest


def _penalty_points(b: Batch):
  """Logits of ERA/DGA: (nat, penalty point, TRADES point or None, state).

  The penalty point moves away from the clean prediction F(x), not from y. Paper eq. 4-6:
  a confidence-minimising point for the penalty and a KL-maximising TRADES point; the
  authors' code (``variant="code"``): one CE-PGD point for both terms (docs/design.md,
  appendix A1, items 2 and 5).
  """
  nat, rest = b.forward(b.x, b.rest)
  clean_pred = jnp.argmax(b.attack_logits(b.x), -1)
  if b.cfg.variant == "code":
    adv, rest = b.forward(b.pgd(clean_pred, b.keys[0], "ce"), rest)
    return nat, adv, None, rest
  x_pen = b.pgd(clean_pred, b.keys[0], "conf")
  x_kl = b.pgd(b.y, b.keys[1], "kl", start="normal")
  adv, rest = b.forward(x_pen, rest)
  trades_adv, rest = b.forward(x_kl, rest)
  return nat, adv, trades_adv, rest


def _penalty_kwargs(b: Batch, trades_adv) -> dict:
  # The authors' code averages the KL over classes ("mean"); the paper sums it.
  return dict(beta=b.beta, trades_beta=b.cfg.trades_beta, trades_adv_logits=trades_adv,
              kl_reduction="mean" if b.cfg.variant == "code" else "sum")


def era(b: Batch):
  """ERA (paper eq. 4-6): beta TRADES + the soft robust-inaccuracy penalty."""
  nat, adv, trades_adv, rest = _penalty_points(b)
  return losses.era(nat, adv, b.y, **_penalty_kwargs(b, trades_adv)), nat, rest


def dga(b: Batch):
  """DGA: ERA's points with the DGA penalty (joint softmax in the authors' code)."""
  nat, adv, trades_adv, rest = _penalty_points(b)
  kwargs = _penalty_kwargs(b, trades_adv)
  return losses.dga(nat, adv, b.y, joint_softmax=b.cfg.variant == "code", **kwargs), nat, rest


def _noisy_logits(b: Batch):
  """Logits [K, B, C] of K = ``cfg.noise_draws`` Gaussian copies per input, and the state."""
  k, (n, *shape) = b.cfg.noise_draws, b.x.shape
  draw = lambda key, xi: jax.random.normal(key, (k,) + xi.shape, xi.dtype)
  eta = b.cfg.sigma * jnp.swapaxes(jax.vmap(draw)(b.keys[0], b.x), 0, 1)   # [K, B, ...]
  flat, rest = b.forward((b.x[None] + eta).reshape((-1, *shape)), b.rest)
  return flat.reshape((k, n, -1)), rest


def noise(b: Batch):
  """L_noise (paper eq. 8): the mean CE over the noisy copies."""
  noisy, rest = _noisy_logits(b)
  return losses.noise(noisy, b.y), noisy.mean(0), rest


def cra(b: Batch):
  """L_CRA (paper eq. 7, radius eq. 9): beta L_noise + the misclassified points' radius."""
  noisy, rest = _noisy_logits(b)
  per_example = losses.cra(noisy, b.y, sigma=b.cfg.sigma, beta=b.beta, gamma=b.cfg.gamma,
                           code_variant=b.cfg.variant == "code")
  return per_example, noisy.mean(0), rest


def ibp(b: Batch):
  """IBP training (Gowal et al. 2018, eq. 9): ``kappa CE(z(x), y) + (1 - kappa) CE(z_hat, y)``
  with z_hat the worst-case logits of the interval bounds over the eps_t-ball
  (`ibp.worst_case_logits`), eps_t = ramp * eps and kappa = 1 - ramp (1 - ibp_kappa), ramp
  = ``b.scale`` (`step.loss_scale`). The bounds and the natural logits come from the loss's
  forward in eval mode (the config refuses train mode), so both are differentiated."""
  c, ramp = b.cfg, b.scale
  logits = lambda xa: b.forward(xa, b.rest)[0]
  nat = logits(b.x)
  box = ibp_lib.bounds(logits, b.x, c.eps * ramp, norm=c.norm)
  kappa = 1.0 - (1.0 - c.ibp_kappa) * ramp
  worst = ibp_lib.worst_case_logits(box.lo, box.hi, b.y)
  per_example = (kappa * losses.cross_entropy(nat, b.y)
                 + (1.0 - kappa) * losses.cross_entropy(worst, b.y))
  return per_example, nat, b.rest


# MMA (Ding et al. 2020, "MMA training", BorealisAI/mma_training config.py and trainer.py):
# the weight of the clean CE (clean_loss_coeff 1/3), the PGD step as eps_iter_scale 2.5 times
# the radius over the steps, 10 bisection steps, and the search radius 1.05 d_max.
MMA_CLEAN_WEIGHT, MMA_STEP_SCALE, MMA_SEARCH_STEPS, MMA_SEARCH_FACTOR = 1 / 3, 2.5, 10, 1.05


def _soft_logit_margin(logits, y):
  """``logsumexp_{j != y} f_j - f_y`` (the authors' "slm"): < 0 iff the softmax of y beats
  the rest together; CE = softplus(slm), so PGD on CE takes the same (sign, normalised) steps."""
  onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  others = jax.nn.logsumexp(jnp.where(onehot, -jnp.inf, logits), axis=-1)
  return others - jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)


def _shortest_perturbation(b: Batch):
  """(x + d u, d): the authors' ANPGD without the per-example warm start: PGD at the search
  radius R = 1.05 d_max, then a bisection for the smallest d in [0, R] at which the soft logit
  margin along u = (x_pgd - x) / R turns >= 0 (``anpgd.bisection_search``; d = R when the
  attack fails). The authors start each example's PGD at its margin of the previous epoch;
  here every step searches from R, so d is the margin along the PGD direction."""
  c = b.cfg
  radius = MMA_SEARCH_FACTOR * c.eps
  x_pgd = jax.lax.stop_gradient(attacks.pgd(
      b.attack_logits, b.x, b.y, key=b.keys[0], eps=radius, norm=c.norm,
      n_iter=c.attack_steps, rel_step=MMA_STEP_SCALE / c.attack_steps, loss="ce"))
  u = (x_pgd - b.x) / radius
  shape = (-1,) + (1,) * (b.x.ndim - 1)
  margin = lambda d: _soft_logit_margin(
      b.attack_logits(jnp.clip(b.x + d.reshape(shape) * u, 0.0, 1.0)), b.y)

  def bisect(_, carry):
    d, m, low, high = carry
    low = jnp.maximum(jnp.where(m < 0, d, 0.0), low)
    high = jnp.minimum(jnp.where(m < 0, radius, d), high)
    d = (low + high) / 2
    return d, margin(d), low, high

  full = jnp.full(b.x.shape[:1], radius, b.x.dtype)
  d, *_ = jax.lax.fori_loop(0, MMA_SEARCH_STEPS, bisect,
                            (full, margin(full), jnp.zeros_like(full), full))
  return jax.lax.stop_gradient(b.x + d.reshape(shape) * u), jax.lax.stop_gradient(d)


def mma(b: Batch):
  """MMA (Ding et al. 2020, eq. 6-8; the authors' ``Trainer.train_one_batch``): 1/3 clean CE
  + 2/3 (CE at the shortest successful perturbation x + d u for the correctly classified
  examples whose margin d < d_max = ``eps``, CE at x for the misclassified ones)."""
  nat, rest = b.forward(b.x, b.rest)
  correct = _soft_logit_margin(b.attack_logits(b.x), b.y) < 0
  x_margin, d = _shortest_perturbation(b)
  mixed = jnp.where(correct.reshape((-1,) + (1,) * (b.x.ndim - 1)), x_margin, b.x)
  out, rest = b.forward(mixed, rest)
  weight = jnp.where(correct, (d < b.cfg.eps).astype(out.dtype), 1.0)
  per_example = (MMA_CLEAN_WEIGHT * losses.cross_entropy(nat, b.y)
                 + (1 - MMA_CLEAN_WEIGHT) * weight * losses.cross_entropy(out, b.y))
  return per_example, nat, rest


OBJECTIVES = {"std": std, "trades": trades, "era": era, "dga": dga, "mart": mart,
              "noise": noise, "cra": cra, "ibp": ibp, "mma": mma}     # keys: training.config.LOSSES, in that order
