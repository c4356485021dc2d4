"""AutoAttack (Croce & Hein 2020): a fixed ensemble of complementary attacks, worst case kept.

    x_adv = autoattack(logits_fn, x, y, key=key, eps=8/255)                     # standard
    res = autoattack_run(logits_fn, x, y, key=key, eps=8/255, norm="l2")
    res.robust, res.broken_by                                                  # [B] bool, [B] int
    x_adv = autoattack(rand_fn, x, y, key=key, eps=8/255, version="rand")      # EOT

``version="standard"`` runs APGD-CE, APGD-T (9 targets), FAB-T (9 targets), each 100 iterations,
then Square (5000 queries), as AutoAttack does; each attack only sees the points that survived
the previous ones, and a broken point is never replaced. ``version="rand"`` (randomized models,
``rand_fn(x, key) -> logits``) runs APGD-CE and APGD-DLR with 20 EOT draws per gradient.
Robust accuracy over all samples is reported after the clean check, each attack and each target
of APGD-T / FAB-T, as AutoAttack's log prints it (absl INFO; ``progress=True`` prints the lines,
a callable receives `Progress` events); AutoAttack-style sanity checks run first.

On concrete inputs the survivors are gathered between attacks (and between the targets of
APGD-T and FAB-T) and padded to a power-of-two bucket, so late attacks run on small batches
and compile a handful of shapes at most; the ensemble stops when nothing is left. Under
`jit` (traced inputs) every attack runs on the whole batch with the broken samples masked.
Each attack draws its randomness from ``fold_in(example_key, attack_id)``, so results do not
depend on the batch, and the bucketing cannot change them.

Several radii: pass ``active`` (samples still robust at the smaller radius) and a per-example
eps; a sample broken at a smaller radius need not be attacked again at a larger one.
"""
import functools
import sys
import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from flax import nnx

from jax_abstain.attacks import checks, common, compiled
from jax_abstain.attacks.apgd import apgd_run
from jax_abstain.attacks.fab import fab_run
from jax_abstain.attacks.square import square_run
from jax_abstain.errors import UserError

VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
            "rand": ("apgd-ce", "apgd-dlr")}
ATTACK_IDS = {"apgd-ce": 0, "apgd-t": 1, "fab-t": 2, "square": 3, "apgd-dlr": 4}
MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4, "fab-t": 2}


class AutoAttackResult(NamedTuple):
  x_adv: jax.Array      # [B, ...] worst case found per sample (x where robust)
  robust: jax.Array     # [B] bool: argmax logits_fn(x_adv) == y
  broken_by: jax.Array  # [B] int32: index (in `attack_names(...)`) of the attack that broke
                        # it; -1 robust, -2 misclassified (or inactive) at the clean point


def _one_attack(name, logits_fn, x, y, keys, eps, active, *, norm, n_iter, n_queries,
                n_target_classes, randomized, eot_iter, target=None):
  """Runs attack `name` on the active samples (APGD-T and FAB-T: only target number `target`
  if not None); returns (x_adv, robust) re-read at x_adv."""
  apgd_kw = dict(key=keys, eps=eps, norm=norm, n_iter=n_iter, n_restarts=1,
                 randomized=randomized, eot_iter=eot_iter)
  if name in ("apgd-ce", "apgd-dlr", "apgd-t"):
    loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr-targeted"}[name]
    x_adv = apgd_run(logits_fn, x, y, loss=loss, n_target_classes=n_target_classes,
                     active=active, only_target=target, **apgd_kw).x_adv
  elif name == "fab-t":
    res = fab_run(logits_fn, x, y, key=keys, eps=eps, norm=norm, n_iter=n_iter,
                  n_target_classes=n_target_classes, active=active, only_target=target)
    ok = (res.dist <= eps).reshape((-1,) + (1,) * (x.ndim - 1))
    x_adv = jnp.where(ok, common.project(res.x_adv, x, eps, norm), x)
  elif name == "square":
    x_adv = square_run(logits_fn, x, y, key=keys, eps=eps, norm=norm, n_queries=n_queries,
                       active=active).x_adv
  else:
    raise UserError(f"autoattack: unknown attack {name!r}, expected one of {', '.join(ATTACK_IDS)}")
  if randomized:
    logits = logits_fn(x_adv, jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 2**29))
  else:
    logits = logits_fn(x_adv)
  return x_adv, jnp.argmax(logits, -1) == y


class Progress(NamedTuple):
  """One progress event of `autoattack_run`: after the clean check ("clean"), after each
  attack, and after each target of APGD-T and FAB-T (a chunk of the attack)."""
  attack: str        # "clean" or the attack's name
  target: int | None  # 0-based target number within APGD-T / FAB-T, else None
  n_targets: int | None
  robust: int        # samples with argmax == y at the worst point found so far, of all `total`
  total: int         # every sample passed in (inactive ones count as not robust)
  seconds: float     # since the call started

  def line(self) -> str:
    """AutoAttack's log line: robust accuracy over all samples (with y the labels; with y
    the clean prediction, the fraction whose prediction no attack changed)."""
    frac = f"{100.0 * self.robust / max(self.total, 1):.2f}% ({self.robust}/{self.total})"
    if self.attack == "clean":
      return f"autoattack: initial accuracy (argmax == y): {frac}"
    chunk = f" target {self.target + 1}/{self.n_targets}" if self.target is not None else ""
    return (f"autoattack: robust accuracy after {self.attack.upper()}{chunk}: {frac}, "
            f"total time {self.seconds:.1f} s")


def _reporter(progress):
  """progress None: absl INFO lines; True: also printed to stderr (through tqdm.write, so
  they do not break a progress bar); a callable: called with each `Progress` as well."""
  def report(event: Progress):
    logging.info("%s", event.line())
    if progress is True:
      tqdm.tqdm.write(event.line(), file=sys.stderr)
    elif callable(progress):
      progress(event)
  return report


def attack_names(version: str = "standard", attacks_to_run=None, n_classes: int = 10) -> tuple:
  """The attacks `autoattack_run` runs, in order.

  An attack of the version's ensemble that needs more classes than `n_classes` (APGD-DLR 3,
  APGD-T 4: AutoAttack's rule) is dropped with a warning, and the rest of the ensemble runs;
  one named in `attacks_to_run` is refused instead.

  Raises:
    UserError: an unknown version or attack, or a requested attack the classes cannot support.
  """
  if version not in VERSIONS:
    raise UserError(f"autoattack: version must be one of {', '.join(VERSIONS)}, got {version!r}")
  names = tuple(attacks_to_run) if attacks_to_run is not None else VERSIONS[version]
  for name in names:
    if name not in ATTACK_IDS:
      raise UserError(f"autoattack: unknown attack {name!r}, expected one of {', '.join(ATTACK_IDS)}")
  short = [n for n in names if n_classes < MIN_CLASSES.get(n, 2)]
  if short and attacks_to_run is not None:
    raise UserError(f"autoattack: {short[0]} needs >= {MIN_CLASSES[short[0]]} classes (AutoAttack's "
                    f"rule), the model has {n_classes}; leave it out of attacks_to_run")
  if short:
    warnings.warn(f"autoattack: {', '.join(short)} skipped: the model has {n_classes} classes and "
                  f"{'they need' if len(short) > 1 else 'it needs'} "
                  f"{' and '.join(str(MIN_CLASSES[n]) for n in short)} (AutoAttack's rule); "
                  f"running {', '.join(n for n in names if n not in short)}",
                  UserWarning, stacklevel=3)
  return tuple(n for n in names if n not in short)


def autoattack_run(logits_fn, x, y, *, key, eps, norm: str = "linf", version: str = "standard",
                   attacks_to_run=None, n_iter: int = 100, n_queries: int = 5000,
                   n_target_classes: int = 9, eot_iter: int = 20, active=None,
                   run_checks: bool = True, progress=None) -> AutoAttackResult:
  """AutoAttack; returns an AutoAttackResult. See `autoattack` for the arguments.

  ``active`` [B] bool: attack only these samples (others are reported as broken_by = -2 and
  not robust, for the caller to ignore), e.g. the survivors of a smaller radius.
  ``progress``: None (absl INFO lines), True (also printed) or a callable taking `Progress`
  events; the numbers are over all B samples, as AutoAttack logs them, and the last one equals
  ``mean(result.robust)``. Not reported under jit.
  """
  start = time.time()
  norm = common.check_norm(norm)
  attack_names(version, attacks_to_run, n_classes=10**9)
  common.validate_inputs(x, y, eps, "autoattack", norm)
  if min(n_iter, n_queries, n_target_classes, eot_iter) < 1:
    raise UserError("autoattack: n_iter, n_queries, n_target_classes and eot_iter must be >= 1")
  randomized = version == "rand"
  batch = x.shape[0]
  keys = common.example_keys(key, batch)
  eps_b = jnp.asarray(eps, x.dtype) * jnp.ones((batch,), x.dtype)
  traced = not compiled.is_eager(x, y, eps_b, keys)
  clean_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 2**29) if randomized else None
  # fast=False: the eval-mode model itself, so `_jitted_attack` finds its compiled attacks by
  # the model's graph (or function) on the next call; each attack rewrites the gradients.
  logits_fn, clean_logits, n_classes = common.take_model(
      logits_fn, x, y, name="autoattack", keys=clean_keys, randomized=randomized, fast=False)
  if clean_logits is None:
    clean_logits = logits_fn(x, clean_keys) if randomized else logits_fn(x)
  names = attack_names(version, attacks_to_run, n_classes)
  if run_checks and not traced:
    checks.run_all(logits_fn, x, y, attacks_to_run=names, randomized=randomized, key=key,
                   n_target_classes=n_target_classes)
  kw = dict(norm=norm, n_iter=n_iter, n_queries=n_queries, n_target_classes=n_target_classes,
            randomized=randomized, eot_iter=eot_iter if randomized else 1)

  robust = jnp.argmax(clean_logits, -1) == y
  if active is not None:
    robust = robust & jnp.asarray(active, bool)
  broken_by = jnp.where(robust, -1, -2).astype(jnp.int32)
  x_adv = x

  def attack_keys(k, name):
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(k, ATTACK_IDS[name])

  if traced:
    for i, name in enumerate(names):
      adv_i, rob_i = _one_attack(name, logits_fn, x, y, attack_keys(keys, name), eps_b, robust,
                                 **kw)
      newly = robust & ~rob_i
      x_adv = jnp.where(newly.reshape((-1,) + (1,) * (x.ndim - 1)), adv_i, x_adv)
      broken_by = jnp.where(newly, i, broken_by)
      robust = robust & rob_i
    return AutoAttackResult(x_adv, robust, broken_by)

  run = _jitted_attack(logits_fn, kw)
  report = _reporter(progress)
  x_adv, robust, broken_by = np.array(x), np.array(robust), np.array(broken_by)
  x_j, y_j = jnp.asarray(x), jnp.asarray(y)
  report(Progress("clean", None, None, int(robust.sum()), batch, time.time() - start))
  robust_after = {}
  for i, name in enumerate(names):
    # APGD-T and FAB-T run target by target, each on the survivors of the previous ones.
    n_targets = min(n_target_classes, n_classes - 1) if name in ("apgd-t", "fab-t") else None
    for t in range(n_targets) if n_targets else (None,):
      todo = np.flatnonzero(robust)
      if not todo.size:   # nothing left to attack
        break
      size = min(batch, compiled.bucket(todo.size))
      sel = np.concatenate([todo, np.repeat(todo[:1], size - todo.size)])
      act = np.arange(size) < todo.size
      adv_i, rob_i = run(name, x_j[sel], y_j[sel], attack_keys(keys[sel], name), eps_b[sel],
                         jnp.asarray(act), jnp.int32(t or 0))
      adv_i, rob_i = np.asarray(adv_i)[:todo.size], np.asarray(rob_i)[:todo.size]
      newly = todo[~rob_i]
      x_adv[newly] = adv_i[~rob_i]
      broken_by[newly] = i
      robust[newly] = False
      report(Progress(name, t, n_targets, int(robust.sum()), batch, time.time() - start))
    robust_after[name] = float(robust.mean())
  if run_checks:
    checks.check_square_success(robust_after)
  return AutoAttackResult(jnp.asarray(x_adv), jnp.asarray(robust), jnp.asarray(broken_by))


def _jitted_attack(logits_fn, kw):
  """``run(name, x, y, keys, eps, active, target)``, one jit per attack (the target number of
  APGD-T / FAB-T is an argument, ignored by the others); an NNX model's state is an argument
  (not a baked-in constant), so compilation is cheap and shared across buckets.

  The jitted functions are cached per (graphdef or function, options), so calling autoattack
  chunk after chunk on the same model compiles each attack once per bucket size, not per call.
  """
  items = tuple(sorted(kw.items()))
  if isinstance(logits_fn, nnx.Module):
    graphdef, state = nnx.split(logits_fn)
    run_state = _jit_for_graph(graphdef, items)
    return lambda name, *args: run_state(state, name, *args)
  return _jit_for_fn(logits_fn, items)


@functools.lru_cache(maxsize=8)
def _jit_for_graph(graphdef, items):
  kw = dict(items)

  @functools.partial(jax.jit, static_argnums=1)
  def run_state(state, name, x, y, keys, eps, active, target):
    return _one_attack(name, nnx.merge(graphdef, state), x, y, keys, eps, active, target=target,
                       **kw)
  return run_state


@functools.lru_cache(maxsize=8)
def _jit_for_fn(logits_fn, items):
  kw = dict(items)

  @functools.partial(jax.jit, static_argnums=0)
  def run(name, x, y, keys, eps, active, target):
    return _one_attack(name, logits_fn, x, y, keys, eps, active, target=target, **kw)
  return run


def autoattack(logits_fn, x, y, *, key, eps, norm: str = "linf", version: str = "standard",
               **kwargs) -> jax.Array:
  """AutoAttack; returns the worst-case x_adv [B, ...] in the eps-ball and [0, 1].

  Args:
    logits_fn: batch [B, ...] -> logits [B, C], C >= 2. An NNX module runs as an eval-mode
      copy and is never changed (docs/design.md, Contracts); a function is used as given. For
      ``version="rand"`` a randomized model ``(x [B, ...], keys [B]) -> logits`` (see
      `common.per_example_randomized`).
    x: [B, ...] inputs in [0, 1] (NHWC images for Square; vectors are searched as 1 x D).
    y: [B] int32 labels, or the clean prediction for label-free robustness.
    key: a key or [B] per-example keys.
    eps: radius (float or [B]).
    norm: ``"linf"`` or ``"l2"``.
    version: ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square) or ``"rand"`` (APGD-CE and
      APGD-DLR with EOT). With too few classes APGD-T (< 4) and APGD-DLR (< 3) are skipped with
      a warning (`attack_names`); named in ``attacks_to_run`` they are refused.
    **kwargs: `autoattack_run` options: ``attacks_to_run``, ``n_iter`` (100), ``n_queries``
      (5000), ``n_target_classes`` (9), ``eot_iter`` (20), ``active``, ``run_checks``,
      ``progress`` (True prints AutoAttack's log lines; a callable gets `Progress` events).

  Returns:
    x_adv [B, ...]; a sample is robust iff ``argmax logits_fn(x_adv) == y``.

  Raises:
    UserError: bad inputs or options, labels outside 0..C-1, a model output that is not
      finite [B, C] logits with C >= 2, or a forward pass that changes state.
  """
  return autoattack_run(logits_fn, x, y, key=key, eps=eps, norm=norm, version=version,
                        **kwargs).x_adv
