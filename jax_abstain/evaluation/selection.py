"""Report columns of a selection network (paper eq. 15) and of IBP certification.

    cols = selection.selection_columns(sn, x, radii=["0.15"], key=key, sample_idx=idx)
    # {"sn_score": [N], "sn_cert@0.15": [N], "sn_adv@0.15": [N]}
    cols = selection.certified_columns(model, x, radii=["0.15"])     # {"is_cert@0.15": [N]}
    selection.add_columns("reports/ibp.csv", {**cols}, "reports/ace_ibp.csv")

A selection network is a 2-class network whose softmax of class 1 ("select") is the score
s(x) in [0, 1]; S_SN(x) = 1{s(x) >= tau} (`selectors.selection_network`). Per radius r:

  * ``sn_cert@<r>``: a certified lower bound of s over the r-ball, sigmoid(lo_1 - hi_0) from
    the interval bounds of the logits (`jax_abstain.ibp`; the softmax of two classes is the
    sigmoid of their difference, increasing in it);
  * ``sn_adv@<r>``: the lowest score APGD finds, min(s(x), s(x_adv)) with x_adv from APGDconf
    with label 1, which maximises the confidence of class 0, i.e. minimises s (best-loss
    point, `attacks.apgd`); keys ``fold_in(fold_in(key, sample_idx), r)``.

So ``sn_adv@<r> >= sn_cert@<r>`` for every sample (tests/selection_network_test.py).
``is_cert@<r>`` is 1 where IBP proves the classifier's clean prediction constant on the
r-ball (label-free, as ``is_rob``; docs/design.md, appendix A0).
"""
import jax
import jax.numpy as jnp
import numpy as np

from jax_abstain import attacks, ibp, radii as radii_lib, reports, validation
from jax_abstain.errors import UserError


def _batches(n: int, batch_size: int):
  return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def selection_columns(selector, x, *, radii, key, sample_idx=None, n_iter: int = 20,
                      batch_size: int = 250, norm: str = "linf") -> dict:
  """The score columns of a selection network on x.

  Args:
    selector: ``x [B, ...] -> logits [B, 2]`` (an NNX module runs in eval mode).
    x: [N, ...] inputs in [0, 1].
    radii: radii (input units) of the certified and attacked columns.
    key: attack key; sample_idx: [N] indices for the per-sample keys (default 0..N-1).
    n_iter: APGD iterations; batch_size: samples per jitted call; norm: "linf" or "l2".

  Returns:
    {"sn_score", "sn_cert@<r>", "sn_adv@<r>" per radius}: [N] float arrays in [0, 1].

  Raises:
    UserError: a selector without exactly 2 outputs, bad radii or inputs.
  """
  fn = validation.eval_copy(selector)
  x = jnp.asarray(validation.check_images(x))
  texts = [radii_lib.format_radius(r) for r in validation.check_radii(radii)]
  idx = np.arange(len(x)) if sample_idx is None else np.asarray(sample_idx)
  if validation.check_logits(fn(x[:1]), 1, name="selection network") != 2:
    raise UserError("selection network: expected 2 outputs (abstain, select)")
  score = lambda xb: jax.nn.softmax(fn(xb), -1)[:, 1]

  @jax.jit
  def run(xb, keys, eps):
    box = ibp.bounds(fn, xb, eps, norm=norm)
    cert = jax.nn.sigmoid(box.lo[:, 1] - box.hi[:, 0])
    x_adv = attacks.apgd(fn, xb, jnp.ones(xb.shape[0], jnp.int32), key=keys, eps=eps,
                         norm=norm, n_iter=n_iter, loss="conf")
    return cert, jnp.minimum(score(xb), score(x_adv))

  out = {"sn_score": np.concatenate([np.asarray(jax.jit(score)(x[s]))
                                     for s in _batches(len(x), batch_size)])}
  for text in texts:
    eps = radii_lib.parse_radius(text)
    parts = [run(x[s], jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, i),
                                                                int(eps * 1e6)))(idx[s]), eps)
             for s in _batches(len(x), batch_size)]
    out[f"sn_cert@{text}"] = np.concatenate([np.asarray(p[0]) for p in parts])
    out[f"sn_adv@{text}"] = np.concatenate([np.asarray(p[1]) for p in parts])
  return out


def certified_columns(model, x, *, radii, batch_size: int = 250, norm: str = "linf") -> dict:
  """{"is_cert@<r>": [N] int} per radius: IBP certifies the clean prediction on the r-ball."""
  x = jnp.asarray(validation.check_images(x))
  run = jax.jit(lambda xb, eps: ibp.certified(model, xb, eps, norm=norm))
  out = {}
  for r in validation.check_radii(radii):
    out[f"is_cert@{radii_lib.format_radius(r)}"] = np.concatenate(
        [np.asarray(run(x[s], r)).astype(np.int64) for s in _batches(len(x), batch_size)])
  return out


def add_columns(report_path, columns: dict, out_path) -> dict:
  """Writes the report at `report_path` with `columns` ([N] each, in its row order) appended
  (replacing columns of the same name) to `out_path`; returns the new columns.

  Raises:
    UserError: a column of another length than the report.
  """
  cols = reports.read_report(report_path)
  n = len(cols["sample_idx"])
  for name, values in columns.items():
    if len(values) != n:
      raise UserError(f"column {name}: {len(values)} values for a report of {n} samples")
  merged = {**cols, **{k: np.asarray(v) for k, v in columns.items()}}
  reports.write_report(out_path, merged)
  return merged
