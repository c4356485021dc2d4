"""Model selection: robust (in)accuracy on validation rows, the best checkpoint wins.

    (x_tr, y_tr), (x_val, y_val) = selection.holdout(x, y, n_val=1000, seed=0)
    key, mode = selection.criterion("era")                 # ("rob_inacc", "min")
    evaluate = selection.Evaluator(graphdef, cfg, mesh, x_val, y_val)     # cfg: a TrainConfig
    scores = evaluate(params, rest)   # {"nat_acc", "rob_acc", "rob_inacc"}, percent
    if selection.improved(scores[key], best, mode): ...

The authors keep the ERA checkpoint with the lowest validation robust inaccuracy and the
TRADES checkpoint with the highest validation robust accuracy, validating every 5 epochs with
40-step PGD (step 0.1 eps) in eval mode, robustness label-free (the attack moves away from the
clean prediction F(x)); later ties win (docs/design.md, appendix A1, item 8). Their
validation rows are the first 2,000 test images; the train job takes them from
``cfg.selection_split`` (`training.config.VALIDATION_SOURCES`): ``"train_holdout"`` holds out
part of the training data (`holdout`), ``"test_slice"`` reproduces theirs, ``"none"`` (the
default) does not select.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jax_abstain import attacks
from jax_abstain.errors import UserError
from jax_abstain.training import distributed
from jax_abstain.training.config import TrainConfig
from jax_abstain.training.step import forward

# Losses whose goal is few robust mistakes (ERA, DGA, CRA and the noise baseline of CRA):
# select by robust inaccuracy; the others (std, TRADES, MART) by robust accuracy.
BY_ROBUST_INACCURACY = ("era", "dga", "noise", "cra")


def criterion(loss: str):
  """(metric name, "min" or "max") used to pick the checkpoint of a run with `loss`."""
  return ("rob_inacc", "min") if loss in BY_ROBUST_INACCURACY else ("rob_acc", "max")


def improved(value: float, best, mode: str) -> bool:
  """True if `value` is at least as good as `best` (None: nothing yet); later ties win."""
  return best is None or (value <= best if mode == "min" else value >= best)


def holdout(x, y, n_val: int, seed: int):
  """Splits off `n_val` random rows (seeded; both parts keep data order) for validation.

  Returns:
    (x_train, y_train), (x_val, y_val).
  """
  if not 0 < n_val < len(x):
    raise UserError(f"train.select_size: expected 0 < n < {len(x)} (training rows), got {n_val}")
  val = np.zeros(len(x), bool)
  val[np.random.default_rng([seed, 0x5E1]).permutation(len(x))[:n_val]] = True
  return (x[~val], y[~val]), (x[val], y[val])


class Evaluator:
  """Counts natural and robust outcomes of the current parameters on fixed validation data.

  Args:
    graphdef: the model's graph definition.
    cfg: the settings (norm, selection_eps, select_steps, select_rel_step, select_batch_size).
    mesh: the ``("data",)`` mesh; batches are sharded over it.
    x, y: validation inputs [N, ...] in [0, 1] and labels [N], the same on every process.
    seed: attack randomness (per sample ``fold_in(key, i)``, the same at every validation).
  """

  def __init__(self, graphdef, cfg: TrainConfig, mesh, x, y, *, seed: int = 0):
    n_dev = mesh.devices.size
    self.batch = -(-cfg.select_batch_size // n_dev) * n_dev    # rounded up to the devices
    self.mesh, self.x, self.y = mesh, np.asarray(x, np.float32), np.asarray(y, np.int32)
    base = jax.random.key(seed)

    @jax.jit
    def counts(params, rest, xb, yb, idx, valid):
      logits_fn = lambda xa: forward(graphdef, params, rest, xa, "eval")[0]
      pred = jnp.argmax(logits_fn(xb), -1)
      keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(idx)
      x_adv = attacks.pgd(logits_fn, xb, pred, key=keys, eps=cfg.selection_eps, norm=cfg.norm,
                          n_iter=cfg.select_steps, rel_step=cfg.select_rel_step, loss="ce")
      rob = jnp.argmax(logits_fn(x_adv), -1) == pred
      acc = pred == yb
      return jnp.stack([jnp.sum(valid & acc), jnp.sum(valid & acc & rob),
                        jnp.sum(valid & ~acc & rob)])

    self._counts = counts

  def __call__(self, params, rest) -> dict:
    n, b = len(self.y), self.batch
    total = np.zeros(3, np.int64)
    for lo in range(0, n, b):
      idx = np.arange(lo, lo + b)
      rows = np.minimum(idx, n - 1)          # pad the last batch by repeating its last row
      put = lambda a: distributed.replicated_rows(self.mesh, a)
      total += np.asarray(self._counts(params, rest, put(self.x[rows]), put(self.y[rows]),
                                       put(idx), put(idx < n)))
    nat, rob_acc, rob_inacc = 100.0 * total / n
    return {"nat_acc": nat, "rob_acc": rob_acc, "rob_inacc": rob_inacc}
