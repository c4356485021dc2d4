"""Plots (PNG): decision regions (Figure 1) and the Pareto figures 2-4, one plotter for all.

    plots.pareto_figures(named, core="std", eps="0.1", out="runs/report")   # the 3 figures
    plots.pareto(points, "rob_inacc", "rob_acc", "series", "fig.png", "title",
                 maximize=(False, True), label_key="model")
    points = plots.grid_points(200)                      # [200*200, 2]
    plots.decision_regions(path, [(title, regions, is_acc, is_rob, None)], x, ...)

Figures are `matplotlib.figure.Figure` objects drawn on an Agg canvas of their own: no pyplot,
no global backend, nothing set at import (docs/design.md, "Decisions"). Files are written with
`jax_abstain.files.atomic_write`. `pareto_figures` writes the paper's three Pareto figures from
per-sample reports under one set of names (`FIGURES`), for the report job and the beta sweep,
with the tables' column names on the axes (`axis_label`), percent axes within [0, 100],
coincident points side by side and labelled, and every glyph in the legend:

  fig2_rob_acc_vs_rob_inacc.png  robust accuracy over robust inaccuracy per model, at the
                                 selection radius 2 eps by default (Fig. 2)
  fig3_rob_sel_vs_rob_acc.png    commit_prec at eps (accurate and robust among the selected)
                                 over rob_sel of the abstain models (the core left out):
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
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import ScaledTranslation

from jax_abstain import files, metrics, radii
from jax_abstain.analysis import labels, tables
from jax_abstain.errors import UserError

DPI = 120   # of the PNGs
REGION_COLORS = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fdd0a2")
MARKERS = ("o", "^", "s", "D", "v", "P", "X", "<", ">", "*", "h")
FIGURES = {"fig2": "fig2_rob_acc_vs_rob_inacc.png", "fig3": "fig3_rob_sel_vs_rob_acc.png",
           "fig4": "fig4_composition.png"}
# What each table column means; axis labels lead with the column's name (`axis_label`).
MEANINGS = {"rob_acc": "robust accuracy", "rob_inacc": "robust inaccuracy",
            "nat_acc": "natural accuracy", "rob_sel": "robust selection",
            "commit_prec": "robust accuracy of the selected"}
BOUNDS = (0.0, 100.0)   # percent axes of the Pareto figures


def axis_label(key: str, at=None, *, two_lines: bool = False) -> str:
  """An axis label under the tables' name of the column, e.g. ``rob_acc @0.3 [%]: robust
  accuracy`` (`at`: the radius, as the tables' headers write it); `two_lines` puts the
  meaning on a line of its own (vertical axes)."""
  sep = "\n" if two_lines else ": "
  return f"{key}{f' @{at}' if at else ''} [%]{sep}{MEANINGS.get(key, key)}"


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


HATCH = "...."   # where a composition's core answers (decision regions)


def _region_panel(ax, panel, gx, gy, num_classes, eps, lim):
  title, regions, is_acc, is_rob, shade, x = panel
  grid = gx.shape[0]
  regions = np.asarray(regions).reshape(grid, grid)
  ax.contourf(gx, gy, regions, levels=np.arange(num_classes + 1) - 0.5,
              cmap=ListedColormap(REGION_COLORS[:num_classes]), alpha=0.8)
  if shade is not None:
    ax.contourf(gx, gy, np.asarray(shade, float).reshape(grid, grid), levels=[0.5, 1.5],
                colors="none", hatches=[HATCH])
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
  ax.set_xlabel(r"$x_1$ (input feature 1)")
  ax.set_ylabel(r"$x_2$ (input feature 2)")
  ax.set_aspect("equal")
  ax.legend(loc="upper left", fontsize=7, framealpha=0.85)


def _regions_legend(fig, axes, num_classes: int, hatched: bool) -> None:
  """The glyphs shared by the panels, below them: a patch per predicted class's region colour
  and, when a panel hatches, the hatching (where the composition's core answers)."""
  handles = [Patch(facecolor=REGION_COLORS[k], alpha=0.8, label=f"region predicted as class {k}")
             for k in range(num_classes)]
  if hatched:
    handles.append(Patch(facecolor="white", edgecolor="black", hatch=HATCH,
                         label="H: the core answers (the branch abstains)"))
  fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
             bbox_to_anchor=(0.5, -0.02), bbox_transform=fig.transFigure, frameon=False)


def decision_regions(path, panels, x, *, num_classes: int, eps: float, grid: int,
                     lim=(0.0, 1.0)) -> Figure:
  """Draws one panel per model: coloured decision regions and the points by robustness split.

  Every panel has axis labels and a legend of its points; a legend below the panels names the
  region colours and the hatching.

  Args:
    path: output PNG.
    panels: list of ``(title, regions [G*G], is_acc [N], is_rob [N], shade [G*G] or None)``;
      ``regions`` are class ids at `grid_points(grid, lim)`, ``shade`` marks grid points to
      hatch (where a composition's core answers).
    x: [N, 2] evaluated points.
    num_classes: number of classes (region colours).
    eps: threat radius, shown in the titles.
    grid: grid resolution per axis (G).

  Returns:
    The saved figure.
  """
  points = grid_points(grid, lim)
  gx, gy = points[:, 0].reshape(grid, grid), points[:, 1].reshape(grid, grid)
  fig = new_figure((4.2 * len(panels), 4.6))
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, panel in zip(axes, panels):
    _region_panel(ax, (*panel, np.asarray(x)), gx, gy, num_classes, eps, lim)
  fig.tight_layout()
  _regions_legend(fig, axes, num_classes, any(p[4] is not None for p in panels))
  save_figure(fig, path)
  return fig


def _check_points(points, keys, path) -> None:
  if not points:
    raise UserError(f"pareto: no points to plot for {path}")
  for p in points:
    for k in keys:
      if k not in p:
        raise UserError(f"pareto: point {p} has no field {k!r}")


SIZE = 60   # marker area [pt^2]
SPACING = labels.SPACING


def _scatter(ax, xs, ys, dx, style: dict) -> None:
  """Markers at (xs, ys), each shifted by dx [pt] on screen (`matplotlib.transforms.
  ScaledTranslation`: the shift stays the same whatever the axis limits)."""
  fig = ax.get_figure()
  for shift in sorted(set(dx)):
    keep = np.asarray(dx) == shift
    coll = ax.scatter(xs[keep], ys[keep], clip_on=False, s=SIZE, edgecolors="white",
                      linewidths=0.5, **style)   # data limits from the true places
    if shift:
      coll.set_offset_transform(ax.transData
                                + ScaledTranslation(shift / 72, 0, fig.dpi_scale_trans))


def _draw_series(ax, points, dx, keys, fronts, maximize):
  """Markers (side by side where `dx` says) and fronts of each series; returns the legend
  handles of the series and whether a front line was drawn."""
  colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
  handles, any_front = [], False
  for i, name in enumerate(dict.fromkeys(p["_series"] for p in points)):
    idx = [j for j, p in enumerate(points) if p["_series"] == name]
    xs, ys = (np.array([float(points[j][k]) for j in idx]) for k in keys)
    style = {"marker": MARKERS[i % len(MARKERS)], "color": colors[i % len(colors)],
             "zorder": 3 + i}
    _scatter(ax, xs, ys, [dx[j] for j in idx], style)
    handles.append(Line2D([], [], ls="", markersize=np.sqrt(SIZE), markeredgecolor="white",
                          markeredgewidth=0.5, label=name, **style))
    if len(idx) > 1 and (fronts is True or (fronts and name in fronts)):
      front = metrics.pareto_front(xs, ys, maximize)
      ax.plot(xs[front], ys[front], color=style["color"], lw=1.0, alpha=0.7, zorder=2)
      any_front = any_front or len(front) > 1   # a one-point front draws no line
  return handles, any_front


def _legend(ax, handles, *, fronts: bool, side_by_side: bool, reference) -> None:
  """Every glyph of the plot in the legend: the series' markers, the fronts' line, the
  reference line, and a note when markers stand side by side. A figure legend right of the
  axes: it hides no marker and no label."""
  if fronts:
    handles.append(Line2D([], [], color="0.45", lw=1.0, label="Pareto front of a series"))
  if reference is not None:
    handles.append(Line2D([], [], color="0.4", ls="--", lw=0.8, label=str(reference[0])))
  if side_by_side:
    handles.append(Line2D([], [], ls="", label="side by side: equal values"))
  ax.get_figure().legend(handles=handles, fontsize=7, loc="upper left", framealpha=0.85,
                         bbox_to_anchor=(1.02, 1.0), bbox_transform=ax.transAxes)


def pareto(points, x_key: str, y_key: str, series_key: str, path, title: str, *,
           maximize=(True, True), xlabel=None, ylabel=None, fronts=True, label_key=None,
           reference=None, bounds=None) -> Figure:
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
    xlabel, ylabel: axis labels (default: `axis_label` of the key).
    fronts: draw the front of every series with 2+ points (True), of none (False), or of the
      series named in a collection.
    label_key: if given, each point is annotated with this field (points at one place share
      one label; `labels.place` keeps labels clear of each other, of the markers, the legend
      and the axes edges, with leader lines and wider margins where points crowd). Without
      it, only places where several points coincide are labelled (with their series).
    reference: optional ``(name, y)`` drawn as a horizontal dashed line (e.g. the core's
      natural accuracy in Fig. 4).
    bounds: optional ``(low, high)`` that both axes stay within (e.g. (0, 100) for percent).

  Coincident points (equal to the tables' two decimals) are drawn side by side, `SPACING`
  apart on screen around their place, and labelled; every glyph has a legend entry.

  Returns:
    The saved figure (its artists can be measured, e.g. the labels' boxes).

  Raises:
    UserError: no points, or a point without one of the fields.
  """
  _check_points(points, [x_key, y_key, series_key] + ([label_key] if label_key else []), path)
  points = [{**p, "_series": str(p[series_key])} for p in points]
  dx = labels.side_by_side(points, x_key, y_key)
  fig = new_figure((5.6, 4.4))
  ax = fig.subplots()
  handles, any_front = _draw_series(ax, points, dx, (x_key, y_key), fronts, maximize)
  if reference is not None:
    ax.axhline(float(reference[1]), color="0.4", ls="--", lw=0.8)
  ax.set_xlabel(xlabel or axis_label(x_key))
  ax.set_ylabel(ylabel or axis_label(y_key, two_lines=True))
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.margins(x=0.15, y=0.1)
  labels.clamp(ax, bounds)
  _legend(ax, handles, fronts=any_front, side_by_side=any(dx), reference=reference)
  items = labels.point_items(points, x_key, y_key, label_key)
  if items:
    labels.place(fig, ax, items, fontsize=7, zorder=4 + len(handles), bounds=bounds)
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
    ``series`` and ``label``. Fig. 3 shows the abstain models only (not the core,
    `tables.abstain_models`) and leaves out selectors that select nothing (their precision
    is undefined; the tables write it as 0).
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
          for r in tables.abstain_rows(tables.abstain_models(named, core), eps, taus=taus)
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
  double = radii.double_radius(eps)
  pareto(points["fig2"], "rob_inacc", "rob_acc", "series", paths["fig2"],
         f"{prefix}robust accuracy vs robust inaccuracy at {radius} (Fig. 2)",
         maximize=(False, True), label_key=label(points["fig2"]), bounds=BOUNDS,
         xlabel=axis_label("rob_inacc", radius),
         ylabel=axis_label("rob_acc", radius, two_lines=True))
  pareto(points["fig3"], "rob_sel", "commit_prec", "series", paths["fig3"],
         f"{prefix}abstain models at eps={eps}, selection at {double} (Fig. 3)",
         label_key=label(points["fig3"]), bounds=BOUNDS,
         xlabel=axis_label("rob_sel", double),
         ylabel=axis_label("commit_prec", eps, two_lines=True))
  if points["fig4"] is None:
    del paths["fig4"]
    return paths
  core_row = points["fig4"][0]
  pareto(points["fig4"], "rob_acc", "nat_acc", "series", paths["fig4"],
         f"{prefix}compositions with core {core} at eps={eps} (Fig. 4)",
         label_key=label(points["fig4"]), bounds=BOUNDS,
         xlabel=axis_label("rob_acc", eps), ylabel=axis_label("nat_acc", two_lines=True),
         fronts={p["series"] for p in points["fig4"] if p.get("branch")},
         reference=(f"natural accuracy of {core}", core_row["nat_acc"]))
  return paths
