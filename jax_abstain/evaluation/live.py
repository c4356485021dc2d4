"""Live compositions of models (paper eq. 12): inference H(x) and its evaluation.

    from jax_abstain.evaluation import live
    select = live.robustness_selector(era, eps=2 * eps, key=key)      # x -> [B] bool (S_ERI)
    pred, answered_by = live.predict([era, std], [select], x)         # H(x), [B] each
    comp, pred = live.evaluate_composition([era, std], x, y, eps="1/255", key=key)

Every model but the last is an abstain model whose selector decides whether it answers; the
first model whose selector fires answers, and the last one (the core) answers the rest.
`evaluate_composition` checks each abstain model's robustness indicator at ``select_at``
(default 2 eps, the sound choice of section 5) with the keys of `empirical.evaluate_model`, so
its result equals composing the models' reports (`compose.compose_reports`).
"""
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from jax_abstain import attacks, compose, radii as radii_lib, validation
from jax_abstain.attacks.multi_radius import pad_rows
from jax_abstain.evaluation import runner as runner_lib
from jax_abstain.errors import UserError


def predict(logits_fns: Sequence[Callable], selector_fns: Sequence[Callable], x):
  """Live compositional inference H(x) (eq. 12, cascaded).

  Args:
    logits_fns: M models (abstain models first, core last), each x -> logits [B, C]; NNX
      modules run as eval-mode copies and are never changed (docs/design.md, Contracts).
    selector_fns: M-1 selectors, each x -> [B] bool (e.g. `robustness_selector`).
    x: [B, ...] inputs in [0, 1].

  Returns:
    (pred [B] int32, answered_by [B] int32): H's prediction and the index of the model that
    gave it.

  Raises:
    UserError: not one selector per abstain model, or a model whose output is not [B, C]
      logits (C >= 2) or whose forward pass changes state.
  """
  if len(selector_fns) != len(logits_fns) - 1:
    raise UserError("predict: need one selector per abstain model (all models but the core)")
  preds = []
  for i, f in enumerate(logits_fns):
    f, out = validation.inference_model(f, x, name=f"predict: model {i}")
    validation.check_logits(out, n=x.shape[0], name=f"predict: model {i}")
    preds.append(jnp.argmax(f(x), -1))
  answered_by = jnp.full(preds[0].shape, len(logits_fns) - 1, jnp.int32)
  for m in range(len(selector_fns) - 1, -1, -1):   # earlier models take precedence
    answered_by = jnp.where(selector_fns[m](x), m, answered_by)
  stacked = jnp.stack(preds)
  return jnp.take_along_axis(stacked, answered_by[None], 0)[0].astype(jnp.int32), answered_by


def robustness_selector(logits_fn, *, eps, key, attack=None, **attack_kwargs):
  """A live S_ERI (eq. 10): selects x where `attack` at radius eps does not flip F(x).

  Args:
    logits_fn: x [B, ...] -> logits [B, C] (an NNX module runs as its eval-mode copy).
    eps: radius of the check (2 eps of the threat model in the paper, section 5).
    key: key of the attack.
    attack: ``attack(logits_fn, x, y, *, key, eps, **attack_kwargs) -> x_adv``
      (default `attacks.apgd`, APGD-CE).

  Returns:
    x [B, ...] -> [B] bool, jit-compatible.
  """
  attack = attack or attacks.apgd
  logits_fn = validation.eval_copy(logits_fn)   # an NNX module: never changed, eval mode

  def select(x):
    clean = jnp.argmax(logits_fn(x), -1)
    x_adv = attack(logits_fn, x, clean, key=key, eps=eps, **attack_kwargs)
    return attacks.is_robust(logits_fn, x_adv, clean)
  return select


def evaluate_composition(models_, x, y, *, eps, key, select_at=None, norm: str = "linf",
                         n_iter: int = 40, n_restarts: int = 1, batch_size: int = 500,
                         sample_idx=None):
  """Evaluates the live composition H of `models_` (abstain models first, core last).

  Each abstain model selects by its robustness indicator at ``select_at`` (default 2 eps),
  checked with APGD-CE over the nested radii (eps, select_at); `predict` gives H's predictions;
  H counts as robust at eps where the model that answered is (the selector is assumed
  unflipped, appendix A.3 of the paper).

  Args:
    models_: M NNX models in eval mode.
    x: [N, ...] in [0, 1]; y: [N] labels.
    eps: threat radius; select_at: one radius or one per abstain model.
    key, norm, n_iter, n_restarts, batch_size, sample_idx: as in `empirical.evaluate_model`.

  Returns:
    (`compose.Composition`, predictions [N] of H).

  Raises:
    UserError: fewer than 2 models, not one ``select_at`` per abstain model, labels outside
      a model's classes, or a model output that is not finite [B, C] logits. A radius that
      covers the whole input box warns.
  """
  eps_t = radii_lib.format_radius(eps)
  k = len(models_) - 1
  sel = list(select_at) if isinstance(select_at, (list, tuple)) else [select_at] * k
  if k < 1 or len(sel) != k:
    raise UserError("evaluate_composition: need >= 2 models and one select_at per abstain model")
  sel = [radii_lib.double_radius(eps_t) if r is None else radii_lib.format_radius(r) for r in sel]
  runners = [runner_lib.ModelRunner(m, norm=norm, n_iter=n_iter, n_restarts=n_restarts)
             for m in models_]
  for i, r in enumerate(runners):   # labels against every model's classes, radii against the box
    out = validation.inference_model(r.model, jnp.asarray(x[:1]), name=f"model {i}")[1]
    validation.check_labels(y, n=len(x), num_classes=validation.check_logits(
        out, n=len(x[:1]), name=f"evaluate_composition: model {i}"), name="evaluate_composition: y")
  for text in dict.fromkeys([eps_t, *sel]):
    validation.check_radius_in_box(radii_lib.parse_radius(text), runners[0].norm,
                                   int(np.prod(np.shape(x)[1:])), f"evaluate_composition: {text}")
  n = len(x)
  sample_idx = runner_lib.sample_indices(sample_idx, n)
  pred, answered, rob = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
  for lo in range(0, n, batch_size):
    m = min(lo + batch_size, n) - lo
    xb = pad_rows(x[lo:lo + m], batch_size)
    keys = runner_lib.sample_keys(key, pad_rows(sample_idx[lo:lo + m], batch_size))
    h_pred, h_by, h_rob = _compose_batch(runners, xb, keys, eps_t, sel, m)
    pred[lo:lo + m], answered[lo:lo + m], rob[lo:lo + m] = h_pred[:m], h_by[:m], h_rob[:m]
  return compose.Composition(answered, pred == np.asarray(y), rob), pred


def _compose_batch(runners, xb, keys, eps_t, sel, m):
  """H's prediction, answering model and robustness at eps on one padded batch [B, ...] whose
  first `m` rows are real."""
  batch_size = len(xb)
  preds = [r.predict(xb)[0] for r in runners]
  masks = [r.robust(xb, p, keys, sorted({eps_t, s}, key=radii_lib.parse_radius))[s]
           for r, p, s in zip(runners, preds, sel)]
  h_pred, h_by = predict([r.logits for r in runners],
                         [lambda _, s=s: jnp.asarray(s) for s in masks], jnp.asarray(xb))
  h_pred, h_by = np.asarray(h_pred), np.asarray(h_by)
  h_rob = np.zeros(batch_size, bool)
  for j, r in enumerate(runners):
    # Attack only the samples model j answers, packed into one padded batch.
    rows = np.flatnonzero(h_by[:m] == j)
    if rows.size:
      rob_j = r.robust(pad_rows(xb[rows], batch_size), pad_rows(h_pred[rows], batch_size),
                       keys[pad_rows(rows, batch_size)], [eps_t])[eps_t]
      h_rob[rows] = rob_j[:rows.size]
  return h_pred, h_by, h_rob
