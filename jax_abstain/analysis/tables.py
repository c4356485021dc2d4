"""Tables of the paper from per-sample reports: data splits, abstain and composition points.

    named = {"std": reports.read_report("std.csv"), "era": reports.read_report("era.csv")}
    rows = tables.split_rows(named)                  # Tables 7-8: one row per model and radius
    print(tables.splits_markdown(rows))
    tables.write_csv("splits.csv", rows)
    tables.model_rows(named, eps="0.1")              # Fig. 2: rob_acc vs rob_inacc
    tables.abstain_rows(named, eps="0.1")            # Fig. 3: rob_sel vs abstain-model rob_acc
    tables.composition_rows(named, core="std", eps="0.1")   # Fig. 4: composed nat vs rob acc

Every row is a flat dict of plain values (percentages with 2 decimals), ready for CSV, JSON
or `plots.pareto`. The four data splits (appendix A.11) of a model at radius r, with
a = is_acc and s = is_rob@r: s&a (robust accurate), s&~a (robust inaccurate), ~s&a, ~s&~a;
they sum to 100. Abstain rows use the robustness indicator at 2 eps and, when the report has
``adv_conf@<2 eps>``, the robust softmax response over a tau grid (section 7.2).
"""
import csv
import io

import numpy as np

from jax_abstain import compose, files, metrics, radii, selectors
from jax_abstain.analysis import markdown
from jax_abstain.errors import UserError

# The four robustness x accuracy quadrants of appendix A.11 (the paper's "data splits"), in the
# paper's row order: (key of `metrics.four_splits`, label with r = robust, a = accurate).
QUADRANTS = (("nonrob_inacc", "¬r ∧ ¬a"), ("rob_inacc", "r ∧ ¬a"),
             ("nonrob_acc", "¬r ∧ a"), ("rob_acc", "r ∧ a"))


def report_radii(columns: dict) -> list:
  """The radii of a report's ``is_rob@<r>`` columns, in increasing order."""
  return sorted((k.split("@", 1)[1] for k in columns if k.startswith("is_rob@")),
                key=radii.parse_radius)


def _indicators(columns: dict, radius: str):
  """(is_acc, is_rob) at radius; certified reports use the smoothed prediction and R >= r."""
  if "cert_pred" in columns and "radius" in columns:
    return (np.asarray(columns["cert_pred"]) == np.asarray(columns["label"]),
            selectors.certified_indicator(columns["cert_pred"], columns["radius"], radius))
  return (np.asarray(columns["is_acc"], bool),
          selectors.robustness_indicator(columns, radius, select_at=radius))


def selecting_models(named: dict, core, radius) -> dict:
  """`named` for a table or figure at a selection radius (Fig. 2 at 2 eps, Fig. 3): the core is
  kept only if its report has robustness at `radius` (``is_rob@<radius>`` or certified
  columns). The core never selects, so a core evaluated only at the threat radii is left out
  of those views rather than refused; every other model is kept (and must have the column).

  Args:
    named: model name -> report columns.
    core: the core model's name, or None (every model kept).
    radius: the selection radius of the view.
  """
  column = selectors.rob_column(radius)
  return {n: c for n, c in named.items()
          if n != core or column in c or compose.is_certified_report(c)}


def abstain_models(named: dict, core) -> dict:
  """`named` without the core, which never abstains: the models of the abstain views (Fig. 3,
  the abstain table of the report). Every model when core is None."""
  return {n: c for n, c in named.items() if n != core}


def split_rows(named: dict, radii_=None) -> list:
  """One row per (model, radius): n, nat_acc and the four splits in percent (Tables 7-8).

  Args:
    named: model name -> report columns.
    radii_: radii to tabulate (default: every ``is_rob@`` radius of each report; certified
      reports need explicit radii).
  """
  rows = []
  for name, cols in named.items():
    use = [radii.format_radius(r) for r in radii_] if radii_ else report_radii(cols)
    if not use:
      raise UserError(f"{name}: report has no is_rob@<r> column; give the radii to tabulate")
    for r in use:
      acc, rob = _indicators(cols, r)
      splits = metrics.four_splits(acc, rob)
      rows.append({"model": name, "eps": r, "n": int(len(acc)),
                   "nat_acc": round(metrics.natural_accuracy(acc), 2),
                   **{k: round(splits[k], 2) for k, _ in QUADRANTS}})
  return rows


def splits_markdown(rows: list) -> str:
  """The paper's layout of `split_rows`: per radius the four quadrant rows, one column per
  model (percent; ``–`` where a model was not evaluated at that radius), then a legend line."""
  models = list(dict.fromkeys(r["model"] for r in rows))
  eps_list = sorted({r["eps"] for r in rows}, key=radii.parse_radius)
  cell = {(r["model"], r["eps"]): r for r in rows}
  pivot = [{"eps": eps, "split": label,
            **{m: cell[(m, eps)][key] if (m, eps) in cell else "–" for m in models}}
           for eps in eps_list for key, label in QUADRANTS]
  n = sorted({r["n"] for r in rows})
  return (markdown.table(pivot, [("eps", "threat radius"), "split", *models]) + "\n\n"
          "r = robust (label-free, the model's own prediction kept), a = accurate; "
          f"percent of {', '.join(map(str, n))} samples.")


def model_rows(named: dict, eps) -> list:
  """Fig. 2 points: per model nat_acc, rob_acc and rob_inacc at eps."""
  eps = radii.format_radius(eps)
  out = []
  for name, cols in named.items():
    acc, rob = _indicators(cols, eps)
    s = metrics.summary(acc, rob)
    out.append({"model": name, "eps": eps, "nat_acc": round(s["nat_acc"], 2),
                "rob_acc": round(s["rob_acc"], 2), "rob_inacc": round(s["rob_inacc"], 2)})
  return out


def _selector_options(cols: dict, eps: str, taus) -> list:
  """(selector, tau) pairs a report supports: the robustness indicator; over the tau grid the
  robust softmax response (``adv_conf@<2 eps>``) and the selection network, certified and
  attacked (``sn_cert@<eps>``, ``sn_adv@<eps>``, paper eq. 15)."""
  grid = taus or compose.default_tau_grid()
  options = [("robustness", None)]
  if selectors.conf_column(radii.double_radius(eps)) in cols:
    options += [("softmax", t) for t in grid]
  for kind in selectors.SN_SELECTORS:
    if selectors.sn_column(kind, eps) in cols:
      options += [(kind, t) for t in grid]
  return options


def abstain_rows(named: dict, eps, *, taus=None) -> list:
  """Fig. 3 points: robust selection and abstain-model robust accuracy per selector.

  Robustness indicator at 2 eps for every report; robust softmax response for each tau (default
  `compose.default_tau_grid`) when the report has ``adv_conf@<2 eps>``, and the selection
  network's (``sn_cert@<eps>``, ``sn_adv@<eps>``, checked at eps). ``commit_prec`` is the
  share of selected samples that are accurate and robust at eps.
  """
  eps = radii.format_radius(eps)
  at = radii.double_radius(eps)
  out = []
  for name, cols in named.items():
    acc, rob = _indicators(cols, eps)
    for kind, tau in _selector_options(cols, eps, taus):
      sel = selectors.select(cols, kind, eps, tau=tau)
      out.append({"model": name, "selector": kind, "tau": tau, "eps": eps,
                  "select_at": eps if kind in selectors.SN_SELECTORS else at,
                  "rob_sel": round(metrics.robust_selection(sel), 2),
                  "commit_prec": round(metrics.commit_precision(acc, rob, sel), 2)})
  return out


def composition_rows(named: dict, core: str, eps, *, taus=None) -> list:
  """Fig. 4 points: each other model as the branch of a 2-composition with `core`.

  Robustness-indicator selection at 2 eps; softmax response over the tau grid when the branch
  report has ``adv_conf@<2 eps>``. The core alone is the first row (selector ``none``). The core
  is asked only for its accuracy and robustness at eps; ``robustness`` says what each model's
  robustness was read from (``certified``, ``empirical`` or ``none``: with a certified branch
  only certified robustness counts, `compose.model_robustness`).
  """
  if core not in named:
    raise UserError(f"--core: {core!r} is not one of the reports ({', '.join(named)})")
  eps = radii.format_radius(eps)
  acc, rob = _indicators(named[core], eps)
  kind, _ = compose.model_robustness(named[core], eps, certified=False)
  out = [{"branch": "", "core": core, "selector": "none", "tau": None, "eps": eps,
          "nat_acc": round(metrics.natural_accuracy(acc), 2),
          "rob_acc": round(metrics.robust_accuracy(acc, rob), 2), "rob_sel": 0.0,
          "robustness": f"core {kind}"}]
  for name, cols in named.items():
    if name == core:
      continue
    for kind, tau in _selector_options(cols, eps, taus):
      r = compose.compose_reports([cols, named[core]], eps, selector=kind, tau=tau,
                                  names=[name, core])
      out.append({"branch": name, "core": core, "selector": kind, "tau": tau, "eps": eps,
                  "nat_acc": r["nat_acc"], "rob_acc": r["rob_acc"], "rob_sel": r["rob_sel"],
                  "robustness": "branch {}, core {}".format(*r["robustness"])})
  return out


def to_csv(rows: list) -> str:
  """CSV text of flat dict rows (columns of the first row; None written as empty)."""
  buf = io.StringIO()
  if rows:
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
  return buf.getvalue()


def write_csv(path, rows: list) -> None:
  """Writes rows as CSV atomically."""
  files.atomic_write(path, to_csv(rows))
