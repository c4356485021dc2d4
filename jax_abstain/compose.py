"""Compositional models (paper eq. 12) and cascades, live and from per-sample reports.

    python -m jax_abstain.compose --models ERA.csv STD.csv --eps 1/255 --json comp.json
    python -m jax_abstain.compose --models ERA.csv TRADES.csv STD.csv --eps 1/255   # cascade
    python -m jax_abstain.compose --models TRADES.csv STD.csv --eps 1/255 --selector softmax \
        --tau-grid                         # softmax response, tau in linspace(0, 0.99, 20)

Every model but the last is an abstain model whose robustness indicator at ``--select-at``
(default ``2 * eps``, the sound choice of section 5) decides whether it answers; the last one
(the core) always answers. With indicators S (selector), b (branch) and t (core):

    nat_i = S_i * b_acc_i + (1 - S_i) * t_acc_i                                  (eq. 12)
    rob_i = S_i * b_acc_i * b_rob_i + (1 - S_i) * t_acc_i * t_rob_i   (robust at eps)

i.e. the adversary is assumed not to flip the selector, which the 2 eps check guarantees for
the robustness indicator (appendix A.3). Longer cascades apply this recursively: the first
model whose selector fires answers. A sample robust at the selector radius but not at eps
(possible when the two columns come from different attacks) is selected and not robust.
``--selector softmax`` selects by the APGDconf confidence ``adv_conf@<2 eps>`` >= tau instead
(section 7.2); branch accuracy and robustness still come from ``is_acc`` and ``is_rob@<eps>``.
Live inference: `predict`; live evaluation of a composition of models: `evaluate_live`.
"""
import dataclasses
import sys
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from jax_abstain import files, radii, reports, selectors, validation
from jax_abstain.cli import common as cli
from jax_abstain.errors import UserError


@dataclasses.dataclass(frozen=True)
class Composition:
  """Per-sample outcome of a composition: which model answered and whether it was right."""
  answered_by: np.ndarray   # [N] int, index of the answering model
  is_acc: np.ndarray        # [N] bool, the answering model is accurate
  is_rob: np.ndarray        # [N] bool, the answering model is robust at the threat radius

  @property
  def is_rob_acc(self) -> np.ndarray:
    return self.is_acc & self.is_rob

  def summary(self, first_selected: np.ndarray, first_rob_acc: np.ndarray) -> dict:
    """nat_acc, rob_acc (percent, 2 decimals), rob_sel and commit_prec of the first model."""
    sel = np.asarray(first_selected, bool)
    prec = 100.0 * np.sum(sel & first_rob_acc) / np.sum(sel) if sel.any() else 0.0
    return {"nat_acc": round(100.0 * float(np.mean(self.is_acc)), 2),
            "rob_acc": round(100.0 * float(np.mean(self.is_rob_acc)), 2),
            "rob_sel": round(100.0 * float(np.mean(sel)), 2),
            "commit_prec": round(float(prec), 2),
            "answered_share": [round(100.0 * float(np.mean(self.answered_by == m)), 2)
                               for m in range(int(self.answered_by.max(initial=0)) + 1)]}


def compose_indicators(selected: Sequence, is_acc: Sequence, is_rob: Sequence) -> Composition:
  """Cascade composition on indicator arrays.

  Args:
    selected: M-1 selector arrays [N] (one per abstain model, in cascade order).
    is_acc: M accuracy arrays [N] (abstain models first, core last).
    is_rob: M robustness arrays [N] at the threat radius.

  Returns:
    A `Composition`; for M = 2 its means are eq. 12's natural and robust accuracy.
  """
  if len(is_acc) != len(is_rob) or len(selected) != len(is_acc) - 1 or len(is_acc) < 1:
    raise UserError("compose: need one selector per abstain model and accuracy/robustness "
                    "arrays for every model including the core")
  n = len(is_acc[-1])
  for arrays in (selected, is_acc, is_rob):
    for a in arrays:
      if len(a) != n:
        raise UserError(f"compose: all models must cover the same {n} samples, got {len(a)}")
  answered_by = np.full(n, len(is_acc) - 1)
  for m in range(len(selected) - 1, -1, -1):   # earlier models take precedence
    answered_by = np.where(np.asarray(selected[m], bool), m, answered_by)
  acc = np.stack([np.asarray(a, bool) for a in is_acc])
  rob = np.stack([np.asarray(r, bool) for r in is_rob])
  rows = np.arange(n)
  return Composition(answered_by, acc[answered_by, rows], rob[answered_by, rows])


def _is_certified(cols: dict) -> bool:
  return "cert_pred" in cols and "radius" in cols


def _model_indicators(cols: dict, eps_text: str, select_at, *, selector: str, tau,
                      assume_core_nonrobust: bool):
  """(selected, is_acc, is_rob) of one report at the threat radius.

  Empirical reports: accuracy from ``is_acc``, robustness from ``is_rob@<eps>``, selection by
  `selectors.select` (``is_rob@<select_at>`` or ``adv_conf@<select_at>``). Certified reports
  (``cert_pred``, ``radius`` columns): the smoothed classifier answers, accuracy is
  ``cert_pred == label``, robustness and selection are "certified at radius >= eps" (R >= eps
  already makes the selection robust, section 5).
  """
  if _is_certified(cols):
    if selector not in ("robustness", "certified"):
      raise UserError(f"--selector {selector}: certified reports select by their certified "
                      "radius; use --selector robustness or certified")
    certified = selectors.certified_indicator(cols["cert_pred"], cols["radius"], eps_text)
    selected = certified if select_at is None else selectors.certified_indicator(
        cols["cert_pred"], cols["radius"], select_at)
    return selected, np.asarray(cols["cert_pred"] == cols["label"]), certified
  is_acc = np.asarray(cols["is_acc"], bool)
  if assume_core_nonrobust and selectors.rob_column(eps_text) not in cols:
    # The authors' certified compositions treat the core as non-certifiable (reference, 5).
    return None, is_acc, np.zeros_like(is_acc)
  is_rob = selectors.robustness_indicator(cols, eps_text, select_at=eps_text)
  if select_at is None and selector == "robustness":
    select_at = radii.double_radius(eps_text)
  return selectors.select(cols, selector, eps_text, select_at=select_at, tau=tau), is_acc, is_rob


def compose_reports(report_columns: Sequence[dict], eps, select_at: Sequence | None = None, *,
                    selector: str = "robustness", tau=None) -> dict:
  """Composes per-sample reports and summarises; see `compose_reports_per_sample`."""
  comp, first_selected, first_rob_acc, shown = compose_reports_per_sample(
      report_columns, eps, select_at, selector=selector, tau=tau)
  out = {**comp.summary(first_selected, first_rob_acc), "eps": radii.format_radius(eps),
         "select_at": shown, "selector": selector}
  if tau is not None:
    out["tau"] = float(tau)
  return out


def default_tau_grid() -> list:
  """The authors' softmax-response thresholds: linspace(0, 0.99, 20) (reference file, 3)."""
  return [round(float(t), 4) for t in np.linspace(0.0, 0.99, 20)]


def compose_tau_grid(report_columns: Sequence[dict], eps, taus=None, select_at=None, *,
                     selector: str = "softmax") -> list:
  """One composition per threshold tau (the same tau for every abstain model).

  Returns:
    list of `compose_reports` dicts in tau order (a Pareto curve of Fig. 3/4 for S_SR).
  """
  taus = default_tau_grid() if not taus else [float(t) for t in taus]
  return [compose_reports(report_columns, eps, select_at, selector=selector, tau=t) for t in taus]


def compose_reports_per_sample(report_columns: Sequence[dict], eps, select_at: Sequence | None = None,
                               *, selector: str = "robustness", tau=None):
  """Composes per-sample reports (abstain models first, core last) at threat radius eps.

  Args:
    report_columns: M report dicts (see `reports.read_report`), empirical (``is_rob@<r>``
      columns) or certified (``cert_pred``, ``radius``).
    eps: threat radius (``"1/255"`` or float).
    select_at: per abstain model, the radius its selector checks (default 2 * eps for
      empirical reports, eps for certified ones).
    selector: `selectors.SELECTORS` name used by every abstain model.
    tau: threshold of the softmax selectors.

  Returns:
    (Composition, selector of the first model [N], its robust-accurate indicator [N], the
    selector radii used).
  """
  if selector not in selectors.SELECTORS:
    raise UserError(f"--selector: expected one of {', '.join(selectors.SELECTORS)}, got {selector!r}")
  eps_text = radii.format_radius(eps)
  n_abstain = len(report_columns) - 1
  if n_abstain < 1:
    raise UserError("compose: give at least one abstain model and a core model")
  if not select_at:
    select_at = [None] * n_abstain
  elif len(select_at) == 1:
    select_at = list(select_at) * n_abstain
  if len(select_at) != n_abstain:
    raise UserError(f"--select-at: expected 1 or {n_abstain} radii, got {len(select_at)}")
  select_at = [None if r is None else radii.format_radius(r) for r in select_at]
  check_aligned(report_columns)
  certified_mode = any(_is_certified(c) for c in report_columns[:-1])
  views = [_model_indicators(c, eps_text, r, selector=selector, tau=tau, assume_core_nonrobust=False)
           for c, r in zip(report_columns[:-1], select_at)]
  views.append(_model_indicators(report_columns[-1], eps_text, None, selector="robustness", tau=None,
                                 assume_core_nonrobust=certified_mode))
  selected = [v[0] for v in views[:-1]]
  is_acc = [v[1] for v in views]
  is_rob = [v[2] for v in views]
  shown = [(r if r is not None else
            (eps_text if _is_certified(c) or selector == "certified" else
             "clean" if selector == "softmax-natural" else radii.double_radius(eps_text)))
           for c, r in zip(report_columns[:-1], select_at)]
  comp = compose_indicators(selected, is_acc, is_rob)
  return comp, selected[0], is_acc[0] & is_rob[0], shown


def check_aligned(report_columns, names=None) -> None:
  """Raises UserError unless all reports list the same samples in the same order.

  Args:
    report_columns: report dicts.
    names: optional display names (default ``report 1``, ``report 2``, ...).
  """
  names = list(names) if names else [f"report {j + 1}" for j in range(len(report_columns))]
  first = report_columns[0]
  for j, cols in enumerate(report_columns[1:], 1):
    if len(cols["sample_idx"]) != len(first["sample_idx"]):
      raise UserError(f"compose: {names[j]} has {len(cols['sample_idx'])} samples, "
                      f"{names[0]} has {len(first['sample_idx'])}")
    if not np.array_equal(cols["sample_idx"], first["sample_idx"]):
      raise UserError(f"compose: {names[j]} lists different samples than {names[0]} "
                      "(same test set, same order and subset?)")
    if "label" in cols and "label" in first and not np.array_equal(cols["label"], first["label"]):
      raise UserError(f"compose: {names[j]} has different labels than {names[0]} "
                      "(reports of different data sets?)")


def predict(logits_fns: Sequence[Callable], selector_fns: Sequence[Callable], x):
  """Live compositional inference H(x) (eq. 12, cascaded).

  Args:
    logits_fns: M models (abstain models first, core last), each x -> logits [B, C].
    selector_fns: M-1 selectors, each x -> [B] bool (e.g. `robustness_selector`).
    x: [B, ...] inputs in [0, 1].

  Returns:
    (pred [B] int32, answered_by [B] int32).
  """
  if len(selector_fns) != len(logits_fns) - 1:
    raise UserError("predict: need one selector per abstain model (all models but the core)")
  preds = [jnp.argmax(f(x), -1) for f in logits_fns]
  answered_by = jnp.full(preds[0].shape, len(logits_fns) - 1, jnp.int32)
  for m in range(len(selector_fns) - 1, -1, -1):
    answered_by = jnp.where(selector_fns[m](x), m, answered_by)
  stacked = jnp.stack(preds)
  return jnp.take_along_axis(stacked, answered_by[None], 0)[0].astype(jnp.int32), answered_by


def robustness_selector(logits_fn, *, eps, key, attack=None, **attack_kwargs):
  """A live S_ERI: selects x where `attack` (default APGD-CE) at radius eps does not flip F(x)."""
  from jax_abstain import attacks  # local: compose from reports needs no JAX attack code
  attack = attack or attacks.apgd
  def select(x):
    clean = jnp.argmax(logits_fn(x), -1)
    x_adv = attack(logits_fn, x, clean, key=key, eps=eps, **attack_kwargs)
    return attacks.is_robust(logits_fn, x_adv, clean)
  return select


def format_table(result: dict) -> str:
  rows = [("nat_acc", result["nat_acc"]), ("rob_acc", result["rob_acc"]),
          ("rob_sel", result["rob_sel"]), ("commit_prec", result["commit_prec"])]
  tau = f", tau={result['tau']:g}" if "tau" in result else ""
  lines = [f"composition at eps={result['eps']} ({result.get('selector', 'robustness')} selectors "
           f"at {', '.join(result['select_at'])}{tau})"]
  lines += [f"  {name:<12}{value:>8.2f}" for name, value in rows]
  return "\n".join(lines)


def format_grid(rows: list) -> str:
  """One line per threshold: tau, nat_acc, rob_acc, rob_sel, commit_prec."""
  first = rows[0]
  lines = [f"composition at eps={first['eps']} ({first['selector']} selectors at "
           f"{', '.join(first['select_at'])})",
           f"  {'tau':>6}{'nat_acc':>9}{'rob_acc':>9}{'rob_sel':>9}{'commit_prec':>13}"]
  lines += [f"  {r['tau']:>6.3f}{r['nat_acc']:>9.2f}{r['rob_acc']:>9.2f}{r['rob_sel']:>9.2f}"
            f"{r['commit_prec']:>13.2f}" for r in rows]
  return "\n".join(lines)


def _parse_taus(values) -> list:
  taus = []
  for v in values:
    try:
      taus.append(float(v))
    except ValueError:
      raise UserError(f"--tau-grid: expected numbers in [0, 1], got {v!r}") from None
  return taus


def main(argv=None) -> dict:
  parser = cli.ArgumentParser(prog="python -m jax_abstain.compose",
                              description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", required=True,
                      help="per-sample reports: abstain models in cascade order, core model last")
  parser.add_argument("--eps", required=True, help="threat radius, e.g. 1/255")
  parser.add_argument("--select-at", nargs="+", default=None,
                      help="selector radius per abstain model (default: 2*eps)")
  parser.add_argument("--selector", default="robustness",
                      help=f"abstain selector: {', '.join(selectors.SELECTORS)} (default robustness)")
  parser.add_argument("--tau", type=float, default=None, help="softmax-response threshold")
  parser.add_argument("--tau-grid", nargs="*", default=None,
                      help="compose for each threshold (no values: linspace(0, 0.99, 20))")
  parser.add_argument("--json", default=None, help="write the result here")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)
  if len(args.models) < 2:
    raise UserError("--models: give at least one abstain model report and a core model report")
  validation.check_radius(args.eps, "--eps")
  validation.check_radii(args.select_at or [], "--select-at", allow_empty=True)
  for path in args.models:
    files.check_file(path, "report", "--models")
  if args.json:
    files.check_output(args.json, "--json", overwrite=True)
  if args.selector not in selectors.SELECTORS:
    raise UserError(f"--selector: expected one of {', '.join(selectors.SELECTORS)}, got {args.selector!r}")
  if (args.tau is not None or args.tau_grid is not None) and not args.selector.startswith("softmax"):
    raise UserError("--tau/--tau-grid: only with --selector softmax or softmax-natural")
  if args.selector.startswith("softmax") and args.tau is None and args.tau_grid is None:
    raise UserError(f"--selector {args.selector}: give --tau T or --tau-grid [T ...]")
  columns = [reports.read_report(p) for p in args.models]
  if args.tau_grid is not None:
    rows = compose_tau_grid(columns, args.eps, _parse_taus(args.tau_grid), args.select_at,
                            selector=args.selector)
    result = {"eps": rows[0]["eps"], "selector": args.selector, "models": list(args.models),
              "rows": rows}
    print(format_grid(rows))
  else:
    result = compose_reports(columns, args.eps, args.select_at, selector=args.selector, tau=args.tau)
    result["models"] = list(args.models)
    print(format_table(result))
  if args.json:
    files.write_json(args.json, result)
  return result


def run():
  cli.run_with_clean_errors(main, sys.argv[1:])


if __name__ == "__main__":
  run()
