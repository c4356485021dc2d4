"""Markdown tables: the one table builder, and the tables of compositions and cascades.

    print(markdown.table(rows, ["model", ("nat_acc", "natural accuracy")]))
    print(markdown.composition_table(compose.compose_reports(cols, "1/255")))
    print(markdown.alone_and_composed_table(alone, [composition_with_gain]))   # cli.compose
    print(markdown.cascade_table(cascades.optimise(abstain, core, "1/255")))

`table` writes one row per dict: floats with two decimals (the results themselves stay
unrounded or as their producer rounded them, docs/design.md "Contracts"), ``None`` as an empty
cell, numeric columns right-aligned. The split tables (`analysis.tables.splits_markdown`), the
report job, the sweep summary and the compose and cascades command lines all build on it.
"""
import numbers
import re

from jax_abstain.errors import UserError


def _cell(value, digits: int) -> str:
  if value is None:
    return ""
  if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
    return f"{float(value):.{digits}f}"
  return str(value).replace("|", "\\|")


def _numeric(values) -> bool:
  """Whether a column holds numbers (or signed numbers as text, e.g. a gain ``+9.30``)."""
  shown = [v for v in values if v is not None and v != "–"]
  return bool(shown) and all((isinstance(v, numbers.Real) and not isinstance(v, bool))
                             or (isinstance(v, str) and re.fullmatch(r"[+-]\d+(\.\d+)?", v))
                             for v in shown)


def table(rows, columns, *, digits: int = 2) -> str:
  """A markdown table with one line per row.

  Args:
    rows: list of dicts.
    columns: keys to show, each a key or ``(key, header)``; a key missing from a row gives an
      empty cell.
    digits: decimals of float cells.

  Returns:
    The table, lines joined by newlines (no trailing newline).

  Raises:
    UserError: no columns.
  """
  if not columns:
    raise UserError("table: expected at least one column")
  keys = [c[0] if isinstance(c, tuple) else c for c in columns]
  headers = [c[1] if isinstance(c, tuple) else c for c in columns]
  align = ["---:" if _numeric([r.get(k) for r in rows]) else "---" for k in keys]
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
  lines += ["| " + " | ".join(_cell(r.get(k), digits) for k in keys) + " |" for r in rows]
  return "\n".join(lines)


def robustness_line(kinds, names=None, eps=None) -> str:
  """One line naming what each model's robustness was read from (`compose.model_robustness`),
  e.g. ``robustness counted at eps=0.25: b.csv certified, core.csv none``.

  Args:
    kinds: per model, abstain models then the core: ``certified``, ``empirical`` or ``none``.
    names: display names (default ``model 1``, ..., ``core``).
    eps: the threat radius shown.
  """
  names = list(names) if names else [f"model {j + 1}" for j in range(len(kinds) - 1)] + ["core"]
  parts = ", ".join(f"{n} {k}" for n, k in zip(names, kinds))
  note = ("; a certified composition counts only certified robustness"
          if "certified" in kinds[:-1] and "none" in kinds else "")
  return f"robustness counted{f' at eps={eps}' if eps else ''}: {parts}{note}"


def composition_table(results, names=None) -> str:
  """A composition (`compose.compose_reports`) or a tau grid of them (`compose_tau_grid`).

  Args:
    results: one result dict or a list of them (same eps, selector and selector radii).
    names: display names of the models (abstain models, then the core) for the last line.

  Returns:
    A title line, then the table: tau (for softmax selectors), nat_acc, rob_acc, rob_sel,
    commit_prec (percent); then, when the results say it, the robustness each model
    contributed (`robustness_line`).
  """
  rows = [results] if isinstance(results, dict) else list(results)
  first = rows[0]
  tau = [("tau", "tau")] if any("tau" in r for r in rows) else []
  title = (f"composition at eps={first['eps']} ({first.get('selector', 'robustness')} "
           f"selectors at {', '.join(first['select_at'])})")
  text = title + "\n\n" + table(rows, tau + ["nat_acc", "rob_acc", "rob_sel", "commit_prec"],
                                digits=2)
  if first.get("robustness"):
    text += "\n\n" + robustness_line(first["robustness"], names, first["eps"])
  return text


def alone_and_composed_table(alone: list, composed: list, names=None) -> str:
  """Each model alone, then the composition (or a tau grid of them) with its gain over the
  core alone: what the compose command line prints.

  Args:
    alone: per model (abstain models, then the core) ``model``, ``role``, ``robustness``
      (what it was read from; named in the row unless empirical), ``nat_acc``, ``rob_acc``,
      ``rob_inacc`` (percent; `cli.compose.models_alone`).
    composed: composition results (`compose.compose_reports`; several for a tau grid), each
      with ``gain`` = {nat_acc, rob_acc}: the composition minus the core alone, in points.
    names: display names of the models for the robustness line (default: ``model``).

  Returns:
    A title line, the table (percent, two decimals; gains signed) and, when the results say
    it, the robustness each model contributed (`robustness_line`).
  """
  first, core = composed[0], alone[-1]["model"]
  eps = first["eps"]
  rows = [{"": f"{a['model']} alone ({a['role']}"
                + (f", robustness {a['robustness']})" if a["robustness"] != "empirical" else ")"),
           **a} for a in alone]
  for c in composed:
    tau = f" tau={c['tau']:g}" if "tau" in c else ""
    rows.append({**c, "": f"composition{tau}",
                 **{f"gain_{k}": f"{v:+.2f}" for k, v in c["gain"].items()}})
  title = (f"composition at eps={eps} ({first.get('selector', 'robustness')} selectors at "
           f"{', '.join(first['select_at'])}); gain = composition - {core} alone, in points")
  text = title + "\n\n" + table(rows, [
      "", "nat_acc", ("rob_acc", f"rob_acc @{eps}"), ("rob_inacc", f"rob_inacc @{eps}"),
      "rob_sel", "commit_prec", ("gain_nat_acc", "gain nat_acc"),
      ("gain_rob_acc", "gain rob_acc")])
  if first.get("robustness"):
    text += "\n\n" + robustness_line(first["robustness"], names or [a["model"] for a in alone],
                                       eps)
  return text


def _cascade_row(label: str, found, floor: float, shown=None) -> dict:
  """One row of `cascade_table`: `found` names the chain; `shown` (default `found`) holds the
  numbers, ``(prefix, result)`` pairs for each column set."""
  if found is None:
    return {"": label, "cascade": f"none keeps nat_acc >= {floor:.2f}"}
  chain = " -> ".join(f"{n}@{a}" for n, a in zip(found["order"], found["select_at"]))
  row = {"": label, "cascade": chain + " -> core"}
  for prefix, r in shown or [("", found)]:
    row.update({prefix + "nat_acc": r["nat_acc"], prefix + "rob_acc": r["rob_acc"]})
  return row


def cascade_table(result: dict) -> str:
  """The result of `cascades.optimise`: a title line, the core alone, the best 2-composition
  and the best cascade (nat_acc, rob_acc in percent; on the selection set the search chose on
  and on the held-out samples, or once when chosen in-sample), the robustness each model
  contributed, and the gain in robust accuracy (held out, then on the selection set)."""
  floor, sel, split = result["min_nat_acc"], result.get("selection"), result.get("split")
  held = bool(split and split["held_out_samples"])
  cols = ["", "nat_acc", "rob_acc", "cascade"]
  if held:
    cols = ["", "sel. nat_acc", "sel. rob_acc", "held-out nat_acc", "held-out rob_acc",
            "cascade"]
  sets = [("sel. ", sel), ("held-out ", result)] if held else [("", result)]
  rows = [{"": "core alone", "cascade": "core",
           **{p + k: r["core"][k] for p, r in sets for k in ("nat_acc", "rob_acc")}}]
  for label, key in (("best 2-comp.", "best_2"), ("best cascade", "best")):
    found = sets[0][1][key]
    rows.append(_cascade_row(label, found, floor,
                             [(p, r[key]) for p, r in sets] if found else None))
  title = (f"cascades at eps={result['eps']} (nat_acc >= {floor:.2f}; {result['evaluated']} of "
           f"{result['search_space']} cascades scored in {result['seconds']:.2f} s)")
  if held:
    title += (f"\nchosen on a selection set of {split['selection_samples']} samples (val_fraction "
              f"{split['val_fraction']:g}, seed {split['seed']}), measured on the "
              f"{split['held_out_samples']} held-out samples")
  elif split:
    title += f"\nin-sample: chosen and measured on the same {split['selection_samples']} samples"
  text = title + "\n\n" + table(rows, cols)
  if "robustness" in result["core"]:
    text += (f"\n\nrobustness counted at eps={result['eps']}: abstain models empirical, core "
             f"{result['core']['robustness']}")
  if result["gain_rob_acc"] is not None:
    text += (f"\n\ngain over the best 2-composition: {result['gain_rob_acc']:+.2f} points "
             "robust accuracy" + (" on the held-out samples" if held else ""))
    if held and sel["gain_rob_acc"] is not None:
      text += f" ({sel['gain_rob_acc']:+.2f} on the selection set)"
  return text


def sweep_tables(summary: dict) -> str:
  """The tables of a beta sweep summary (`jobs.sweep.summarize`): the models at eps and 2 eps,
  the compositions with the core at eps (selected at 2 eps), and the compositions at 2 eps
  selected at 2 eps (the authors' evaluation default, not sound)."""
  e, d, core = summary["eps"], summary["select_at"], summary["core"]
  models = table(summary["models"], [
      ("run", "model"), "nat_acc", ("rob_acc@eps", f"rob_acc @{e}"),
      ("rob_inacc@eps", f"rob_inacc @{e}"), ("rob_acc@2eps", f"rob_acc @{d}"),
      ("rob_inacc@2eps", f"rob_inacc @{d}"), ("rob_sel@2eps", f"rob_sel @{d}"),
      ("commit_prec@2eps", f"commit_prec @{d}")])
  sound = table(summary["compositions"], [
      ("run", f"composition (selected at {d}, core {core})"), "nat_acc",
      ("rob_acc", f"rob_acc @{e}"), ("rob_sel", f"rob_sel @{d}"), "commit_prec"])
  same = table(summary.get("same_radius", []), [
      ("run", f"composition at {d}, selected at {d} (not sound, authors' eval default)"),
      "nat_acc", ("rob_acc", f"rob_acc @{d}"), ("rob_sel", f"rob_sel @{d}"), "commit_prec"])
  return "\n\n".join([models, sound, same]) + "\n"
