"""Plots (PNG): decision regions (Figure 1) and the Pareto figures 2-4, one plotter for all.

    plots.pareto_figures(named, core="std", eps="0.1", out="runs/report")   # the 3 figures
    plots.pareto(points, "rob_inacc", "rob_acc", "series", "fig.png", "title",
                 maximize=(False, True), label_key="model")
    points = plots.grid_points(200)                      # [200*200, 2]
    plots.decision_regions(path, [(title, regions, is_acc, is_rob, None)], x, ...)

Figures are `matplotlib.figure.Figure` objects drawn on an Agg canvas of their own: no pyplot,
no global backend, nothing set at import (docs/design.md, "Decisions"). Files are written with
`jax_abstain.files.atomic_write`. `pareto_figures` writes the paper's three Pareto figures from
per-sample reports under one set of names (`FIGURES`), for the report job and the beta sweep:

  fig2_rob_acc_vs_rob_inacc.png  robust accuracy over robust inaccuracy per model, at the
                                 selection radius 2 eps by default (Fig. 2)
  fig3_rob_sel_vs_rob_acc.png    abstain-model robust accuracy over robust selection at eps:
                                 robustness indicator at 2 eps (RI), softmax response over tau
                                 where the report has ``adv_conf@<2 eps>`` (SR) (Fig. 3)
  fig4_composition.png           natural over robust accuracy at eps of each model composed with
                                 the core, the models alone and the core (Fig. 4)
"""
import pathlib

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from jax_abstain import files, metrics, radii
from jax_abstain.analysis import labels, tables
from jax_abstain.errors import UserError

DPI = 120   # of the PNGs
REGION_COLORS = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fdd0a2")
MARKERS = ("o", "^", "s", "D", "v", "P", "X", "<", ">", "*", "h")
FIGURES = {"fig2": "fig2_rob_acc_vs_rob_inacc.png", "fig3": "fig3_rob_sel_vs_rob_acc.png",
           "fig4": "fig4_composition.png"}
AXIS_NAMES = {"rob_acc": "robust accuracy R_rob^acc [%]",
              "rob_inacc": "robust inaccuracy R_rob^¬acc [%]",
              "nat_acc": "natural accuracy R_nat [%]", "rob_sel": "robust selection R_rob^sel [%]",
              "commit_prec": "abstain-model robust accuracy R_rob^acc [%]"}


def new_figure(figsize) -> Figure:
  """A figure on its own Agg canvas (text can be measured, no pyplot state), at the dpi of the
  saved PNG (`save_figure`), so measured text boxes are the printed ones."""
  fig = Figure(figsize=figsize, dpi=DPI)
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig: Figure, path) -> None:
  """Saves `fig` as PNG atomically (`files.atomic_write`)."""
  files.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight"))


def grid_points(grid: int, lim=(0.0, 1.0)) -> np.ndarray:
  """[grid * grid, 2] float32 points of a regular grid over lim x lim (row-major in y)."""
  lin = np.linspace(*lim, grid)
  gx, gy = np.meshgrid(lin, lin)
  return np.stack([gx.ravel(), gy.ravel()], -1).astype(np.float32)


def _region_panel(ax, panel, gx, gy, num_classes, eps, lim):
  title, regions, is_acc, is_rob, shade, x = panel
  grid = gx.shape[0]
  regions = np.asarray(regions).reshape(grid, grid)
  ax.contourf(gx, gy, regions, levels=np.arange(num_classes + 1) - 0.5,
              cmap=ListedColormap(REGION_COLORS[:num_classes]), alpha=0.8)
  if shade is not None:
    ax.contourf(gx, gy, np.asarray(shade, float).reshape(grid, grid), levels=[0.5, 1.5],
                colors="none", hatches=["...."])
  is_acc, is_rob = np.asarray(is_acc, bool), np.asarray(is_rob, bool)
  groups = [(is_rob & is_acc, "o", "#1a9641", "robust & accurate"),
            (is_rob & ~is_acc, "X", "#d7191c", "robust & inaccurate"),
            (~is_rob, "^", "#404040", "non-robust")]
  for mask, marker, color, label in groups:
    ax.scatter(x[mask, 0], x[mask, 1], s=9, marker=marker, c=color,
               label=f"{label} ({100 * mask.mean():.1f}%)", linewidths=0.3, edgecolors="white")
  ax.set_title(f"{title}  (eps={eps:g})", fontsize=10)
  ax.set_xlim(*lim)
  ax.set_ylim(*lim)
  ax.set_aspect("equal")
  ax.legend(loc="upper left", fontsize=7, framealpha=0.85)


def decision_regions(path, panels, x, *, num_classes: int, eps: float, grid: int,
                     lim=(0.0, 1.0)) -> None:
  """Draws one panel per model: coloured decision regions and the points by robustness split.

  Args:
    path: output PNG.
    panels: list of ``(title, regions [G*G], is_acc [N], is_rob [N], shade [G*G] or None)``;
      ``regions`` are class ids at `grid_points(grid, lim)`, ``shade`` marks grid points to
      hatch (e.g. where a composition's core answers).
    x: [N, 2] evaluated points.
    num_classes: number of classes (region colours).
    eps: threat radius, shown in the titles.
    grid: grid resolution per axis (G).
  """
  points = grid_points(grid, lim)
  gx, gy = points[:, 0].reshape(grid, grid), points[:, 1].reshape(grid, grid)
  fig = new_figure((4.2 * len(panels), 4.4))
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, panel in zip(axes, panels):
    _region_panel(ax, (*panel, np.asarray(x)), gx, gy, num_classes, eps, lim)
  save_figure(fig, path)


def _check_points(points, keys, path) -> None:
  if not points:
    raise UserError(f"pareto: no points to plot for {path}")
  for p in points:
    for k in keys:
      if k not in p:
        raise UserError(f"pareto: point {p} has no field {k!r}")


def _label_items(points, x_key, y_key, label_key):
  """``((x, y), text)`` per place of the labelled points; points at one place share a label."""
  named = {}
  for p in (p for p in points if str(p[label_key])):
    named.setdefault((float(p[x_key]), float(p[y_key])), []).append(str(p[label_key]))
  return sorted((xy, ", ".join(dict.fromkeys(n))) for xy, n in named.items())


def pareto(points, x_key: str, y_key: str, series_key: str, path, title: str, *,
           maximize=(True, True), xlabel=None, ylabel=None, fronts=True, label_key=None,
           reference=None) -> Figure:
  """Scatter plot of `points`, one marker and colour per series, with each series' Pareto front.

  Args:
    points: list of dicts; each needs numbers at x_key and y_key and a series name at
      series_key (points of one series share a marker, a legend entry and a front, e.g. the
      betas of one ERA sweep).
    x_key, y_key: the plotted fields, e.g. ``"rob_inacc"``, ``"rob_acc"``.
    series_key: field naming each point's series.
    path: output PNG.
    title: figure title.
    maximize: per axis, whether larger is better (decides the fronts, `metrics.pareto_front`).
    xlabel, ylabel: axis labels (default: a readable name of the key).
    fronts: draw the front of every series with 2+ points (True), of none (False), or of the
      series named in a collection.
    label_key: if given, each point is annotated with this field (points at one place share
      one label; `labels.place` keeps labels clear of each other, of the markers, the legend
      and the axes edges, with leader lines and wider margins where points crowd).
    reference: optional ``(name, y)`` drawn as a horizontal dashed line (e.g. the core's
      natural accuracy in Fig. 4).

  Returns:
    The saved figure (its artists can be measured, e.g. the labels' boxes).

  Raises:
    UserError: no points, or a point without one of the fields.
  """
  _check_points(points, [x_key, y_key, series_key] + ([label_key] if label_key else []), path)
  series = list(dict.fromkeys(str(p[series_key]) for p in points))
  fig = new_figure((5.6, 4.4))
  ax = fig.subplots()
  colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, name in enumerate(series):
    group = [p for p in points if str(p[series_key]) == name]
    xs = np.array([float(p[x_key]) for p in group])
    ys = np.array([float(p[y_key]) for p in group])
    color = colors[i % len(colors)]
    # Earlier series are drawn larger so coinciding points stay visible as nested markers.
    ax.scatter(xs, ys, marker=MARKERS[i % len(MARKERS)], color=color, s=max(90 - 15 * i, 24),
               label=name, zorder=3 + i, edgecolors="white", linewidths=0.5)
    if len(group) > 1 and (fronts is True or (fronts and name in fronts)):
      idx = metrics.pareto_front(xs, ys, maximize)
      ax.plot(xs[idx], ys[idx], color=color, lw=1.0, alpha=0.7, zorder=2)
  if reference is not None:
    ax.axhline(float(reference[1]), color="0.4", ls="--", lw=0.8, label=str(reference[0]))
  ax.set_xlabel(xlabel or AXIS_NAMES.get(x_key, x_key))
  ax.set_ylabel(ylabel or AXIS_NAMES.get(y_key, y_key))
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.margins(x=0.15, y=0.1)
  ax.legend(fontsize=7, loc="best", framealpha=0.85)
  if label_key:
    labels.place(fig, ax, _label_items(points, x_key, y_key, label_key), fontsize=7,
                 zorder=4 + len(series))
  save_figure(fig, path)
  return fig


def _selector_tag(row) -> str:
  return "RI" if row["selector"] == "robustness" else "SR"


# Series tags of the threshold selectors: softmax response, selection network (eq. 15).
_TAU_TAGS = {"softmax": "SR", "sn-certified": "SN cert", "sn-empirical": "SN emp"}


def figure_points(named: dict, core, eps, *, radius=None, taus=None, series=None) -> dict:
  """The points of Fig. 2-4 from per-sample reports (rows of `analysis.tables`).

  Args:
    named: model name -> report columns (`reports.read_report`).
    core: name of the core model (Fig. 4), or None (no Fig. 4).
    eps: threat radius.
    radius: radius of Fig. 2 (default 2 eps, the selection radius).
    taus: softmax-response thresholds (default `compose.default_tau_grid`).
    series: model name -> series name (a dict or a callable; default: the name itself).
      Models of one series share a marker and a Pareto front, e.g. an ERA beta sweep.

  Returns:
    ``{"fig2": points, "fig3": points, "fig4": points or None}``; each point carries
    ``series`` and ``label``. Fig. 3 leaves out selectors that select nothing (their
    precision is undefined; the tables write it as 0).
  """
  of = series if callable(series) else (lambda n: (series or {}).get(n, n))
  eps = radii.format_radius(eps)
  radius = radii.format_radius(radius) if radius else radii.double_radius(eps)
  # The core never selects: Fig. 2 (at the selection radius) and Fig. 3 leave it out when its
  # report lacks that radius (`tables.selecting_models`).
  fig2 = [{**r, "series": of(r["model"]), "label": r["model"]}
          for r in tables.model_rows(tables.selecting_models(named, core, radius), radius)]
  fig3 = [{**r, "series": (f"{of(r['model'])} (RI)" if r["selector"] == "robustness"
                           else f"{r['model']} ({_TAU_TAGS[r['selector']]})"),
           "label": r["model"] if r["selector"] == "robustness" else ""}
          for r in tables.abstain_rows(
              tables.selecting_models(named, core, radii.double_radius(eps)), eps, taus=taus)
          if r["rob_sel"] > 0]
  fig4 = None
  if core is not None:
    rows = tables.composition_rows(named, core, eps, taus=taus)
    fig4 = [{**rows[0], "series": f"core {core} alone", "label": core}]
    fig4 += [{**r, "series": (f"{of(r['branch'])} + {core} ({_selector_tag(r)})"
                              if r["selector"] == "robustness"
                              else f"{r['branch']} + {core} ({_TAU_TAGS[r['selector']]})"),
              "label": f"{r['branch']} + {core}" if r["selector"] == "robustness" else ""}
             for r in rows[1:]]
    fig4 += [{**r, "series": "models alone", "label": r["model"]}
             for r in tables.model_rows(named, eps) if r["model"] != core]
  return {"fig2": fig2, "fig3": fig3, "fig4": fig4}


def _label_key(points, annotate):
  """``"label"`` if the points are to be annotated (by default: a series holds 2+ models)."""
  if annotate is None:
    names = {}
    for p in points:
      names.setdefault(p["series"], set()).add(p["label"] or None)
    annotate = any(len(v - {None}) > 1 for v in names.values())
  return "label" if annotate else None


def pareto_figures(named: dict, core, eps, out, *, radius=None, taus=None, series=None,
                   title: str = "", annotate=None) -> dict:
  """Writes the paper's Pareto figures (`FIGURES`) for per-sample reports into folder `out`.

  Args:
    named, core, eps, radius, taus, series: as in `figure_points`.
    out: output folder.
    title: prefix of the figure titles (e.g. the data set).
    annotate: label each point with its model (default: in a figure where a series holds 2+
      models, so the legend alone cannot tell them apart).

  Returns:
    ``{"fig2": path, "fig3": path[, "fig4": path]}``; Fig. 4 only with a core.

  Raises:
    UserError: a report without a column the figures need (``is_rob@<eps>``,
      ``is_rob@<radius>``), or a core that is not one of the reports. Nothing is written then.
  """
  eps = radii.format_radius(eps)
  radius = radii.format_radius(radius) if radius else radii.double_radius(eps)
  points = figure_points(named, core, eps, radius=radius, taus=taus, series=series)
  label = lambda figure: _label_key(figure, annotate)
  prefix = f"{title}: " if title else ""
  paths = {k: pathlib.Path(out) / name for k, name in FIGURES.items()}
  pareto(points["fig2"], "rob_inacc", "rob_acc", "series", paths["fig2"],
         f"{prefix}robust accuracy vs robust inaccuracy at {radius} (Fig. 2)",
         maximize=(False, True), label_key=label(points["fig2"]),
         xlabel=f"robust inaccuracy at {radius} [%]", ylabel=f"robust accuracy at {radius} [%]")
  pareto(points["fig3"], "rob_sel", "commit_prec", "series", paths["fig3"],
         f"{prefix}abstain models at eps={eps}, selection at {radii.double_radius(eps)} (Fig. 3)",
         label_key=label(points["fig3"]),
         xlabel=f"robust selection R_rob^sel, selector at {radii.double_radius(eps)} [%]",
         ylabel=f"robust accuracy of the selected at eps={eps} [%]")
  if points["fig4"] is None:
    del paths["fig4"]
    return paths
  core_row = points["fig4"][0]
  pareto(points["fig4"], "rob_acc", "nat_acc", "series", paths["fig4"],
         f"{prefix}compositions with core {core} at eps={eps} (Fig. 4)",
         label_key=label(points["fig4"]),
         xlabel=f"robust accuracy at eps={eps} [%]", ylabel="natural accuracy [%]",
         fronts={p["series"] for p in points["fig4"] if p.get("branch")},
         reference=(f"natural accuracy of {core}", core_row["nat_acc"]))
  return paths
