"""Summaries of per-sample reports, in one shape for both kinds, and their text.

    s = summary.summarize(columns, cfg)        # cfg: an EvalConfig
    print(summary.format_summary("era", s))

The summary (docs/design.md, Contracts) holds percent values as unrounded floats:

    {"kind": "empirical", "n": N, "nat_acc": %, "attack": "apgd-ce",
     "at": {radius: {"rob_acc": %, "rob_inacc": %, "splits": {four splits, %}}}}
    {"kind": "certified", "n": N, "nat_acc": %, "sigma": sigma,
     "at": {L2 radius: {"cert_acc", "cert_inacc", "commit_rate", "commit_prec", "nat_acc"}}}

``nat_acc`` is the base model's clean accuracy; ``at`` has one entry per radius of
``cfg.radii`` (canonical texts). Only `format_summary` rounds, to two decimals.
"""
from jax_abstain import metrics, validation
from jax_abstain.evaluation import certified
from jax_abstain.errors import UserError


def summarize(columns: dict, cfg) -> dict:
  """The summary of a report written with the settings `cfg` (an `EvalConfig`).

  Args:
    columns: report columns (`reports.read_report`), ``is_rob@<r>`` for every radius of an
      empirical `cfg`, ``cert_pred`` and ``radius`` for a certified one.
    cfg: the `EvalConfig` the report was written with.

  Returns:
    The summary dict above.
  """
  out = {"kind": cfg.kind, "n": int(len(columns["is_acc"])),
         "nat_acc": metrics.natural_accuracy(columns["is_acc"])}
  if cfg.certified:
    out["sigma"] = float(cfg.sigma)
    out["at"] = {r: certified.summarize(columns, r) for r in cfg.radii}
    return out
  out["attack"] = cfg.attack
  out["at"] = {}
  for r in cfg.radii:
    s = metrics.summary(columns["is_acc"], columns[f"is_rob@{r}"])
    out["at"][r] = {"rob_acc": s["rob_acc"], "rob_inacc": s["rob_inacc"], "splits": s["splits"]}
  return out


def check_labels(y, num_classes: int, what: str) -> None:
  """Refuses an empty split or labels outside ``0..num_classes-1`` (the model's classes).

  Args:
    y: [N] int labels.
    num_classes: the model's number of classes.
    what: where the labels come from, for the message (``config.data``).

  Raises:
    UserError: ``<what>: the data split is empty`` or ``<what>: labels span a..b but there
      are C classes ...``.
  """
  if len(y) == 0:
    raise UserError(f"{what}: the data split is empty")
  validation.check_labels(y, num_classes=num_classes, name=what)


def format_summary(name: str, summary: dict) -> str:
  """Printable lines of a summary, percent values rounded to two decimals."""
  lines = [f"{name}: natural accuracy {summary['nat_acc']:.2f}% on {summary['n']} samples"]
  for radius, m in summary["at"].items():
    if summary["kind"] == "certified":
      lines.append(f"  L2 radius={radius:<6} cert_acc {m['cert_acc']:6.2f}  cert_inacc "
                   f"{m['cert_inacc']:6.2f}  commit_rate {m['commit_rate']:6.2f}")
    else:
      lines.append(f"  eps={radius:<8} rob_acc {m['rob_acc']:6.2f}  rob_inacc "
                   f"{m['rob_inacc']:6.2f}")
  return "\n".join(lines)
