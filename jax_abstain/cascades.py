"""Cascades along a Pareto front: the order and selector radii that maximise robust accuracy.

    result = cascades.optimise([era_cols, trades_cols], std_cols, "1/255", names=["era", "trades"])
    result["best"]["order"], result["best"]["select_at"], result["gain_rob_acc"]

The paper composes one abstain model with a core model (eq. 12) and names cascades along the
Pareto front as future work. Given K abstain models (per-sample reports) and a core, this
searches every cascade (A_1, r_1) -> ... -> (A_m, r_m) -> core with distinct A_i, any order and
any selector radius r_i among the ``is_rob@<r>`` columns of A_i's report with r >= 2 eps (sound
selection, section 5), and returns the one with the highest robust accuracy among those whose
natural accuracy is no lower than the core's (ties: higher natural accuracy, then shorter).
It also reports the best 2-composition under the same constraint and the gain.

The choice is made on a selection set of the samples and measured on the held-out rest
(`split_samples`, ``val_fraction=0.5`` by default): scoring thousands of cascades and reporting
the best score on the same samples overstates the gain (the winner's score is a maximum over
noisy estimates). ``val_fraction=0`` is the in-sample search (choose and measure on all).

The counts are computed with bit masks along a depth-first search over cascade prefixes, each
prefix extending its parent's (remaining samples, natural and robust hits) in O(N/8), and a
branch whose optimistic robust count (every remaining sample answered robustly and accurately
by some unused model or the core) cannot beat the best, or whose optimistic natural count
misses the floor, is cut. The full space has sum_{m=1..K} K!/(K-m)! R^m cascades for R radii
per model (`search_space_size`): 6,330 for K=5, R=2; 732,528 for K=6, R=3; 17 million for
K=8, R=2. A prefix costs about 0.1 ms for N = 10,000 samples, and the cuts usually leave a few
percent (measured on random reports with N = 10,000: K=6, R=3 scored 18,930 cascades in 2.6 s;
K=8, R=2 scored 14,162 in 2.2 s). Without cuts K=6, R=3 would take about a minute; use
`max_length` beyond that. The winner is re-scored with `compose.compose_reports`, the same
code as the compose command. The command line is `jax_abstain.cli.cascades`; the result as a
markdown table is `jax_abstain.analysis.markdown.cascade_table`.
"""
import math
import time

import numpy as np

from jax_abstain import compose, radii, selectors
from jax_abstain.errors import UserError


def candidate_radii(columns: dict, eps, min_select_at=None) -> list:
  """Selector radii available in a report: ``is_rob@<r>`` columns with r >= min_select_at
  (default 2 eps), in increasing order."""
  low = radii.parse_radius(radii.double_radius(radii.format_radius(eps))
                           if min_select_at is None else min_select_at)
  found = [k.split("@", 1)[1] for k in columns if k.startswith("is_rob@")]
  return sorted((r for r in found if radii.parse_radius(r) >= low * (1 - 1e-9)),
                key=radii.parse_radius)


def search_space_size(num_models: int, num_radii: int, max_length=None) -> int:
  """Number of cascades: sum over lengths m of K!/(K-m)! * R^m."""
  top = num_models if max_length is None else min(max_length, num_models)
  return sum(math.perm(num_models, m) * num_radii ** m for m in range(1, top + 1))


class _Search:
  """Depth-first search over cascade prefixes with packed bit masks."""

  def __init__(self, sel, acc_rob, acc, core_acc, core_ra, min_nat, max_length):
    self.sel, self.acc_rob, self.acc = sel, acc_rob, acc   # sel[m][j], acc_rob[m], acc[m]
    self.core_acc, self.core_ra = core_acc, core_ra
    self.min_nat, self.max_length = min_nat, max_length
    self.best, self.best2 = None, None                      # (key, prefix)
    self.visited = 0

  @staticmethod
  def count(mask) -> int:
    return int(np.bitwise_count(mask).sum())

  def consider(self, prefix, remaining, nat, rob):
    self.visited += 1
    nat += self.count(remaining & self.core_acc)
    rob += self.count(remaining & self.core_ra)
    if nat < self.min_nat:
      return
    key = (rob, nat, -len(prefix))
    if self.best is None or key > self.best[0]:
      self.best = (key, tuple(prefix))
    if len(prefix) == 1 and (self.best2 is None or key > self.best2[0]):
      self.best2 = (key, tuple(prefix))

  def run(self, prefix=(), remaining=None, nat=0, rob=0):
    unused = [m for m in range(len(self.sel)) if m not in {p[0] for p in prefix}]
    for m in unused:
      for j, s in enumerate(self.sel[m]):
        picked = remaining & s
        child = prefix + ((m, j),)
        c_rem = remaining & ~s
        c_nat = nat + self.count(picked & self.acc[m])
        c_rob = rob + self.count(picked & self.acc_rob[m])
        self.consider(child, c_rem, c_nat, c_rob)
        if len(child) >= self.max_length or len(unused) == 1:
          continue
        # Optimistic bounds for any extension of `child` (including stopping at the core).
        others = [k for k in unused if k != m]
        any_ra = np.bitwise_or.reduce([self.acc_rob[k] for k in others] + [self.core_ra])
        any_acc = np.bitwise_or.reduce([self.acc[k] for k in others] + [self.core_acc])
        if c_nat + self.count(c_rem & any_acc) < self.min_nat:
          continue
        if self.best is not None and c_rob + self.count(c_rem & any_ra) < self.best[0][0]:
          continue
        self.run(child, c_rem, c_nat, c_rob)


def _selector_radii(names, abstain_columns, eps_text, select_radii, min_select_at) -> list:
  """Per abstain model, the selector radii to try (`select_radii` or `candidate_radii`)."""
  per_model = []
  for name, cols in zip(names, abstain_columns):
    if compose.is_certified_report(cols):
      raise UserError(f"{name}: a certified report (cert_pred, radius); the cascade search "
                      "selects by is_rob@<r> columns: compose certified reports with "
                      "jax-abstain-compose")
    rs = ([radii.format_radius(r) for r in select_radii] if select_radii
          else candidate_radii(cols, eps_text, min_select_at))
    if not rs:
      have = ", ".join(k for k in cols if k.startswith("is_rob@")) or "none"
      raise UserError(f"{name}: report has no is_rob@<r> column with r >= "
                      f"{min_select_at or radii.double_radius(eps_text)} (has: {have}); "
                      "evaluate the model at 2 eps")
    per_model.append(rs)
  return per_model


def _pack(a) -> np.ndarray:
  return np.packbits(np.asarray(a, bool))


def _search(abstain_columns, names, core_acc, core_rob, per_model, eps_text, min_nat,
            max_length):
  """Runs `_Search` on packed indicators; returns it (best, best2, visited)."""
  def acc_rob(name, cols):
    try:
      _, rob = compose.model_robustness(cols, eps_text, certified=False)
    except UserError as e:
      raise UserError(f"{name}: {e}") from None
    return _pack(compose.model_accuracy(cols) & rob)
  sel = [[_pack(selectors.robustness_indicator(c, eps_text, select_at=r)) for r in rs]
         for c, rs in zip(abstain_columns, per_model)]
  search = _Search(sel, [acc_rob(n, c) for n, c in zip(names, abstain_columns)],
                   [_pack(compose.model_accuracy(c)) for c in abstain_columns], _pack(core_acc),
                   _pack(core_acc & core_rob), min_nat, max_length)
  search.run((), _pack(np.ones(len(core_acc), bool)), 0, 0)
  return search


def _describe(found, names, per_model, abstain_columns, core_columns, eps_text):
  """A search result ``(key, ((model, radius index), ...))`` re-scored by `compose_reports`."""
  if found is None:
    return None
  order = [m for m, _ in found[1]]
  at = [per_model[m][j] for m, j in found[1]]
  out = compose.compose_reports([abstain_columns[m] for m in order] + [core_columns], eps_text, at,
                                names=[names[m] for m in order] + ["core"])
  return {"order": [names[m] for m in order], **out}


def _core(core_columns, eps_text):
  """The core's accuracy and (kind, robustness) at eps: the only columns it needs (it never
  selects); a certified core counts its certified robustness (`compose.model_robustness`)."""
  try:
    return (compose.model_accuracy(core_columns),
            compose.model_robustness(core_columns, eps_text, certified=False))
  except UserError as e:
    raise UserError(f"core: {e}") from None


def split_samples(sample_idx, val_fraction: float, seed: int = 0) -> np.ndarray:
  """The selection set of a seeded split of the samples (True = selection, False = held out).

  The samples are ordered by ``sample_idx``, shuffled by ``numpy.random.default_rng(seed)``, and
  the first ``round(val_fraction * N)`` go to the selection set, so a split depends only on the
  set of sample indices, the fraction and the seed (not on the order of the report rows).

  Args:
    sample_idx: [N] int sample indices of the reports.
    val_fraction: share of the samples the search may see, in (0, 1).
    seed: seed of the shuffle.

  Raises:
    UserError: a fraction outside (0, 1), or one that leaves either part empty.
  """
  idx = np.asarray(sample_idx)
  f = float(val_fraction)
  k = int(round(f * idx.size))
  if not 0.0 < f < 1.0 or not 0 < k < idx.size:
    raise UserError(f"val_fraction: must leave both the selection and the held-out set "
                    f"non-empty, a fraction in (0, 1) of {idx.size} samples; got {val_fraction}"
                    " (0 chooses and reports on the same samples: in-sample)")
  order = np.argsort(idx, kind="stable")
  mask = np.zeros(idx.size, bool)
  mask[order[np.random.default_rng(seed).permutation(idx.size)[:k]]] = True
  return mask


def _subset(columns: dict, mask) -> dict:
  return {k: np.asarray(v)[mask] for k, v in columns.items()}


def _numbers(found, names, per_model, abstain_columns, core_columns, eps_text) -> dict:
  """Core alone, best 2-composition and best cascade (`found`) scored on the given reports."""
  core_acc, (core_kind, core_rob) = _core(core_columns, eps_text)
  best, best2 = (_describe(f, names, per_model, abstain_columns, core_columns, eps_text)
                 for f in found)
  return {"samples": int(core_acc.size),
          "core": {"nat_acc": round(100.0 * core_acc.mean(), 2),
                   "rob_acc": round(100.0 * (core_acc & core_rob).mean(), 2),
                   "robustness": core_kind},
          "best": best, "best_2": best2,
          "gain_rob_acc": round(best["rob_acc"] - best2["rob_acc"], 2) if best and best2 else None}


def _check(abstain_columns, core_columns, eps, names, select_radii, min_select_at):
  """`optimise`'s checks of its arguments: (names, eps text, selector radii per model)."""
  if not abstain_columns:
    raise UserError("--abstain: give at least one abstain model report")
  names = list(names) if names else [f"A{i + 1}" for i in range(len(abstain_columns))]
  if len(names) != len(abstain_columns):
    raise UserError(f"names: expected {len(abstain_columns)} names, got {len(names)}")
  eps_text = radii.format_radius(eps)
  compose.check_aligned(list(abstain_columns) + [core_columns])
  per_model = _selector_radii(names, abstain_columns, eps_text, select_radii, min_select_at)
  _core(core_columns, eps_text)
  return names, eps_text, per_model


def _choose(abstain_columns, core_columns, names, per_model, eps_text, min_nat_acc,
            max_length, val_fraction, seed):
  """The search on the selection set; (selection mask, search, selection-set numbers,
  reported numbers: held out, or the selection-set ones when `val_fraction` is 0)."""
  in_sample = float(val_fraction) == 0.0
  mask = (np.ones(len(core_columns["sample_idx"]), bool) if in_sample
          else split_samples(core_columns["sample_idx"], val_fraction, seed))
  sel_abstain = [_subset(c, mask) for c in abstain_columns]
  sel_core = _subset(core_columns, mask)
  core_acc, (_, core_rob) = _core(sel_core, eps_text)
  n = len(core_acc)
  min_nat = (int(core_acc.sum()) if min_nat_acc is None
             else int(math.ceil(float(min_nat_acc) / 100.0 * n - 1e-9)))
  search = _search(sel_abstain, names, core_acc, core_rob, per_model, eps_text, min_nat,
                   max_length)
  found = (search.best, search.best2)
  selection = {**_numbers(found, names, per_model, sel_abstain, sel_core, eps_text),
               "min_nat_acc": round(100.0 * min_nat / n, 2)}
  reported = (selection if in_sample else
              _numbers(found, names, per_model, [_subset(c, ~mask) for c in abstain_columns],
                       _subset(core_columns, ~mask), eps_text))
  return mask, search, selection, reported


def optimise(abstain_columns, core_columns: dict, eps, *, names=None, select_radii=None,
             min_select_at=None, max_length=None, min_nat_acc=None, val_fraction: float = 0.5,
             seed: int = 0) -> dict:
  """Best cascade of abstain models before a core model (robustness-indicator selectors).

  The search chooses the order and selector radii on a selection set of the samples
  (`split_samples`: ``val_fraction`` of them, seeded) and the numbers it returns are measured on
  the other, held-out samples, so the gain over the best 2-composition is not inflated by the
  choice (choosing among thousands of cascades on the reported samples overfits them).
  ``val_fraction=0`` chooses and reports on all samples (in-sample, as before).

  Args:
    abstain_columns: K per-sample report dicts (`reports.read_report`) of abstain models.
    core_columns: the core model's report.
    eps: threat radius; every abstain report needs ``is_rob@<eps>`` and its selector columns,
      the core only ``is_acc`` and ``is_rob@<eps>`` (or a certified report: ``radius >= eps``).
    names: K display names (default ``A1..AK``).
    select_radii: candidate selector radii for every model (default: each report's
      `candidate_radii`).
    min_select_at: smallest admissible selector radius (default 2 eps; eps is the authors'
      unsound code default).
    max_length: longest cascade (default K).
    min_nat_acc: natural accuracy floor in percent on the selection set (default: the core's
      on the selection set).
    val_fraction: share of the samples the search chooses on, in (0, 1); 0 = in-sample.
    seed: seed of the split (`split_samples`).

  Returns:
    dict with ``core`` (nat_acc, rob_acc and ``robustness``: ``empirical`` or ``certified``),
    ``best`` and ``best_2`` (``compose_reports`` results, with the ``robustness`` each model
    contributed, plus ``order``), ``gain_rob_acc`` (percentage points of best over best_2; None
    if either is infeasible) and ``samples``: all measured on the held-out samples (on all
    samples when in-sample); ``selection``: the same keys measured on the selection set the
    choice was made on, plus ``min_nat_acc``; ``split`` (``val_fraction``, ``seed``,
    ``selection_samples``, ``held_out_samples``; 0 held out when in-sample); ``min_nat_acc``
    (the floor, percent of the selection set), ``evaluated`` (cascades scored),
    ``search_space`` and ``seconds``.

  Raises:
    UserError: no abstain report, names of the wrong count, reports of different samples, a
      certified abstain report, a report without a column its role needs, or a `val_fraction`
      that leaves the selection or the held-out set empty.
  """
  start = time.perf_counter()
  names, eps_text, per_model = _check(abstain_columns, core_columns, eps, names, select_radii,
                                      min_select_at)
  mask, search, selection, reported = _choose(
      abstain_columns, core_columns, names, per_model, eps_text, min_nat_acc,
      max_length or len(abstain_columns), val_fraction, seed)
  return {"eps": eps_text,
          **{k: reported[k] for k in ("samples", "core", "best", "best_2", "gain_rob_acc")},
          "selection": selection, "min_nat_acc": selection["min_nat_acc"],
          "split": {"val_fraction": float(val_fraction), "seed": int(seed),
                    "selection_samples": int(mask.sum()),
                    "held_out_samples": int((~mask).sum())},
          "candidate_radii": dict(zip(names, per_model)), "evaluated": search.visited,
          "search_space": search_space_size(len(names), max(len(r) for r in per_model), max_length),
          "seconds": round(time.perf_counter() - start, 3)}
