"""Compositional models (paper eq. 12) and cascades from per-sample reports (numpy only).

    comp = compose.compose_indicators([selected], [b_acc, t_acc], [b_rob, t_rob])
    comp.summary()                     # nat_acc, rob_acc, rob_sel, commit_prec, answered_share
    result = compose.compose_reports([era_cols, std_cols], "1/255")       # selected at 2/255
    rows = compose.compose_tau_grid([trades_cols, std_cols], "1/255")     # softmax response

Every model but the last is an abstain model whose robustness indicator at ``select_at``
(default ``2 * eps``, the sound choice of section 5) decides whether it answers; the last one
(the core) always answers. With indicators S (selector), b (branch) and t (core):

    nat_i = S_i * b_acc_i + (1 - S_i) * t_acc_i                                  (eq. 12)
    rob_i = S_i * b_acc_i * b_rob_i + (1 - S_i) * t_acc_i * t_rob_i   (robust at eps)

i.e. the adversary is assumed not to flip the selector, which the 2 eps check guarantees for
the robustness indicator (appendix A.3 of the paper). Longer cascades apply this recursively:
the first model whose selector fires answers. A sample robust at the selector radius but not
at eps (possible when the two columns come from different attacks) is selected and not
robust. ``selector="softmax"`` selects by the APGDconf confidence ``adv_conf@<2 eps>`` >= tau
instead (section 7.2), ``"sn-certified"``/``"sn-empirical"`` by a selection network's lowest
score over the eps-ball, ``sn_cert@<eps>``/``sn_adv@<eps>`` >= tau (eq. 15); branch accuracy and robustness still come from ``is_acc`` and
``is_rob@<eps>``. Result dicts hold percentages rounded to 2 decimals.

Each model is asked only for what its role uses: an abstain model for its selection column at
its own radius, its accuracy and its robustness at eps; the core, which never selects, only
for its accuracy and robustness at eps. A composition with a certified abstain model
(``cert_pred``, ``radius``) is certified and counts only certified robustness: an empirical
core (or any empirical report) contributes none, whatever attack columns it has
(docs/design.md, appendix A5). The result's ``robustness`` names, per model, what was counted:
``certified``, ``empirical`` or ``none``.

Live composition of models (inference and attacks) is `jax_abstain.evaluation.live`; the
command line is `jax_abstain.cli.compose` (docs/design.md, "Layers").
"""
import dataclasses
from typing import Sequence

import numpy as np

from jax_abstain import metrics, radii, selectors
from jax_abstain.errors import UserError


@dataclasses.dataclass(frozen=True)
class Composition:
  """Per-sample outcome of a composition: which model answered and whether it was right.

  The first model answers exactly where its selector fires, so its selection is
  ``answered_by == 0`` and its accuracy and robustness there are `is_acc` and `is_rob`.
  """
  answered_by: np.ndarray   # [N] int, index of the answering model
  is_acc: np.ndarray        # [N] bool, the answering model is accurate
  is_rob: np.ndarray        # [N] bool, the answering model is robust at the threat radius
  num_models: int = 0       # M (abstain models and the core); 0: 1 + max(answered_by)
  robustness: tuple = ()    # per model: what its is_rob was read from (`model_robustness`)

  @property
  def is_rob_acc(self) -> np.ndarray:
    return self.is_acc & self.is_rob

  def summary(self) -> dict:
    """Percent of N, rounded to 2 decimals: nat_acc and rob_acc (eq. 12), rob_sel and
    commit_prec (`metrics.commit_precision`) of the first model, and answered_share per model."""
    first = self.answered_by == 0
    m = max(self.num_models, int(self.answered_by.max(initial=0)) + 1)
    return {"nat_acc": round(metrics.natural_accuracy(self.is_acc), 2),
            "rob_acc": round(metrics.robust_accuracy(self.is_acc, self.is_rob), 2),
            "rob_sel": round(metrics.robust_selection(first), 2),
            "commit_prec": round(metrics.commit_precision(self.is_acc, self.is_rob, first), 2),
            "answered_share": [round(100.0 * float(np.mean(self.answered_by == k)), 2)
                               for k in range(m)]}


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
  return Composition(answered_by, acc[answered_by, rows], rob[answered_by, rows], len(is_acc))


def is_certified_report(cols: dict) -> bool:
  """True for a certified report (``cert_pred`` and ``radius`` columns, `evaluation.certified`)."""
  return "cert_pred" in cols and "radius" in cols


# What a model's robustness at the threat radius is read from (`Composition.robustness`).
CERTIFIED, EMPIRICAL, NONE = "certified", "empirical", "none"


def is_certified_composition(report_columns: Sequence[dict]) -> bool:
  """True when an abstain model (any report but the last) is certified (``cert_pred``,
  ``radius``): the composition then claims certified robustness only."""
  return any(is_certified_report(c) for c in report_columns[:-1])


def model_accuracy(cols: dict) -> np.ndarray:
  """[N] bool: ``cert_pred == label`` for a certified report (the smoothed classifier
  answers), else ``is_acc``."""
  if is_certified_report(cols):
    return np.asarray(cols["cert_pred"]) == np.asarray(cols["label"])
  if "is_acc" not in cols:
    raise UserError("report has no column is_acc (not a per-sample report?)")
  return np.asarray(cols["is_acc"], bool)


def model_robustness(cols: dict, eps, *, certified: bool):
  """(kind, [N] bool): the robustness at the threat radius eps that a model contributes.

  Only the column this role needs is read: ``is_rob@<eps>`` of an empirical report, or
  ``radius >= eps`` (abstentions never) of a certified one. In a certified composition
  (`certified`) only certified robustness counts, so an empirical report contributes none,
  whatever attack columns it has (the authors treat the core as never certified,
  docs/design.md, appendix A5). In an empirical composition a certified report counts its
  certified robustness (certification implies robustness to any attack at eps).

  Returns:
    kind: `CERTIFIED`, `EMPIRICAL` or `NONE`; the indicator.
  """
  if is_certified_report(cols):
    return CERTIFIED, selectors.certified_indicator(cols["cert_pred"], cols["radius"], eps)
  if certified:
    return NONE, np.zeros(len(model_accuracy(cols)), bool)
  return EMPIRICAL, selectors.robustness_indicator(cols, eps, select_at=eps)


def _model_selection(cols: dict, eps_text: str, select_at, *, selector: str, tau):
  """[N] bool selector of an abstain model; reads only its selection column.

  Empirical reports: `selectors.select` (``is_rob@<select_at>``, default 2 eps, or
  ``adv_conf@<select_at>``, or ``conf``). Certified reports select by ``radius >= select_at``
  (default eps: R >= eps already makes the selection robust, section 5).
  """
  if is_certified_report(cols):
    if selector not in ("robustness", "certified"):
      raise UserError(f"--selector {selector}: certified reports select by their certified "
                      "radius; use --selector robustness or certified")
    return selectors.certified_indicator(cols["cert_pred"], cols["radius"],
                                         eps_text if select_at is None else select_at)
  if select_at is None and selector == "robustness":
    select_at = radii.double_radius(eps_text)
  return selectors.select(cols, selector, eps_text, select_at=select_at, tau=tau)


def _roles(report_columns, names):
  """Display name and role of each report, for error messages."""
  names = list(names) if names else [f"report {j + 1}" for j in range(len(report_columns))]
  if len(names) != len(report_columns):
    raise UserError(f"names: expected {len(report_columns)} names, got {len(names)}")
  last = len(names) - 1
  return [f"{n} ({'core' if j == last else f'abstain model {j + 1}'})"
          for j, n in enumerate(names)]


def _named(role: str, fn, *args, **kwargs):
  """fn(*args, **kwargs), with a UserError prefixed by the report's name and role."""
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    raise UserError(f"{role}: {e}") from None


def compose_reports(report_columns: Sequence[dict], eps, select_at: Sequence | None = None, *,
                    selector: str = "robustness", tau=None, names=None) -> dict:
  """Composes per-sample reports and summarises; see `compose_reports_per_sample`.

  Returns:
    `Composition.summary` plus ``eps``, ``select_at`` (per abstain model), ``selector``,
    ``robustness`` (per model, abstain models then the core: ``certified``, ``empirical`` or
    ``none``, what its robustness at eps was read from; `model_robustness`) and ``tau``.
  """
  comp, _, _, shown = compose_reports_per_sample(report_columns, eps, select_at,
                                                 selector=selector, tau=tau, names=names)
  out = {**comp.summary(), "eps": radii.format_radius(eps),
         "select_at": shown, "selector": selector, "robustness": list(comp.robustness)}
  if tau is not None:
    out["tau"] = float(tau)
  return out


def default_tau_grid() -> list:
  """The authors' softmax-response thresholds: linspace(0, 0.99, 20) (docs/design.md,
  appendix A3)."""
  return [round(float(t), 4) for t in np.linspace(0.0, 0.99, 20)]


def compose_tau_grid(report_columns: Sequence[dict], eps, taus=None, select_at=None, *,
                     selector: str = "softmax", names=None) -> list:
  """One composition per threshold tau (the same tau for every abstain model).

  Returns:
    list of `compose_reports` dicts in tau order (a Pareto curve of Fig. 3/4 for S_SR).
  """
  taus = default_tau_grid() if not taus else [float(t) for t in taus]
  return [compose_reports(report_columns, eps, select_at, selector=selector, tau=t, names=names)
          for t in taus]


def _selector_radii(select_at, n_abstain: int) -> list:
  """`select_at` as one radius text (or None = the default) per abstain model."""
  if not select_at:
    select_at = [None] * n_abstain
  elif len(select_at) == 1:
    select_at = list(select_at) * n_abstain
  if len(select_at) != n_abstain:
    raise UserError(f"--select-at: expected 1 or {n_abstain} radii, got {len(select_at)}")
  return [None if r is None else radii.format_radius(r) for r in select_at]


def compose_reports_per_sample(report_columns: Sequence[dict], eps,
                               select_at: Sequence | None = None, *,
                               selector: str = "robustness", tau=None, names=None):
  """Composes per-sample reports (abstain models first, core last) at threat radius eps.

  Each model is asked only for the columns its role needs: an abstain model (first or in the
  middle of a cascade) for its accuracy, its selection column at its own ``select_at`` and its
  robustness at eps; the core, which never selects, for its accuracy and its robustness at
  eps. When an abstain model is certified the composition is certified and counts only
  certified robustness: empirical reports (the core, say) contribute none (`model_robustness`).

  Args:
    report_columns: M report dicts (see `reports.read_report`), empirical (``is_rob@<r>``
      columns) or certified (``cert_pred``, ``radius``).
    eps: threat radius (``"1/255"`` or float).
    select_at: per abstain model, the radius its selector checks (default 2 * eps for
      empirical reports, eps for certified ones).
    selector: `selectors.SELECTORS` name used by every abstain model.
    tau: threshold of the softmax selectors.
    names: M display names for error messages (default ``report 1``, ...).

  Returns:
    (Composition, selector of the first model [N], its robust-accurate indicator [N], the
    selector radii used).

  Raises:
    UserError: an unknown selector, fewer than two reports, misaligned reports, or a column
      a model's role needs is missing (the message names the report and its role).
  """
  if selector not in selectors.SELECTORS:
    raise UserError(f"--selector: expected one of {', '.join(selectors.SELECTORS)}, "
                    f"got {selector!r}")
  eps_text = radii.format_radius(eps)
  n_abstain = len(report_columns) - 1
  if n_abstain < 1:
    raise UserError("compose: give at least one abstain model and a core model")
  select_at = _selector_radii(select_at, n_abstain)
  roles = _roles(report_columns, names)
  check_aligned(report_columns, names)
  certified = is_certified_composition(report_columns)
  selected = [_named(role, _model_selection, c, eps_text, r, selector=selector, tau=tau)
              for c, r, role in zip(report_columns, select_at, roles)]
  is_acc = [_named(role, model_accuracy, c) for c, role in zip(report_columns, roles)]
  kinds, is_rob = zip(*[_named(role, model_robustness, c, eps_text, certified=certified)
                        for c, role in zip(report_columns, roles)])
  shown = [(r if r is not None else
            (eps_text if is_certified_report(c) or selector == "certified"
             or selector in selectors.SN_SELECTORS else
             "clean" if selector == "softmax-natural" else radii.double_radius(eps_text)))
           for c, r in zip(report_columns[:-1], select_at)]
  comp = dataclasses.replace(compose_indicators(selected, is_acc, is_rob), robustness=kinds)
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
