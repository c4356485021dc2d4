"""Plots (PNG, matplotlib Agg): decision regions (Figure 1) and Pareto fronts (Figures 2-4).

    points = plots.grid_points(200)                      # [200*200, 2]
    plots.decision_regions(path, [(title, predict(points), is_acc, is_rob, None)], x, ...)
    plots.pareto([{"model": "era b=0.1", "rob_inacc": 0.3, "rob_acc": 83.8}, ...],
                 "rob_inacc", "rob_acc", "model", "fig2.png", "CIFAR-10, eps 2/255",
                 maximize=(False, True))

Decision-region panels hold a model's class ids on the grid and the evaluated points split
into robust-accurate, robust-inaccurate and non-robust. `pareto` draws any list of dicts as a
scatter, one marker per label, with each label's Pareto front as a step line; the rows of
`jax_abstain.tables` plug in directly (`robustness_pareto`, `abstain_pareto`,
`composition_pareto` give the paper's Figures 2, 3 and 4). Files are written atomically.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from jax_abstain import files, metrics  # noqa: E402
from jax_abstain.errors import UserError  # noqa: E402

REGION_COLORS = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fdd0a2")


def save_figure(fig, path) -> None:
  """Saves `fig` as PNG atomically (`files.atomic_write`)."""
  try:
    files.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
  finally:
    plt.close(fig)


def grid_points(grid: int, lim=(0.0, 1.0)) -> np.ndarray:
  """[grid * grid, 2] float32 points of a regular grid over lim x lim (row-major in y)."""
  lin = np.linspace(*lim, grid)
  gx, gy = np.meshgrid(lin, lin)
  return np.stack([gx.ravel(), gy.ravel()], -1).astype(np.float32)


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
  cmap = ListedColormap(REGION_COLORS[:num_classes])
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
  for ax, (title, regions, is_acc, is_rob, shade) in zip(axes[0], panels):
    regions = np.asarray(regions).reshape(grid, grid)
    ax.contourf(gx, gy, regions, levels=np.arange(num_classes + 1) - 0.5, cmap=cmap, alpha=0.8)
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
  save_figure(fig, path)


MARKERS = ("o", "^", "s", "D", "v", "P", "X", "<", ">", "*", "h")
AXIS_NAMES = {"rob_acc": "robust accuracy R_rob^acc [%]", "rob_inacc": "robust inaccuracy R_rob^¬acc [%]",
              "nat_acc": "natural accuracy R_nat [%]", "rob_sel": "robust selection R_rob^sel [%]",
              "commit_prec": "abstain-model robust accuracy R_rob^acc [%]"}


def pareto(points, x_key: str, y_key: str, label_key: str, path, title: str, *,
           maximize=(True, True), xlabel=None, ylabel=None, front: bool = True,
           reference=None) -> None:
  """Scatter plot of `points` with each label's Pareto front (Figures 2-4, beta sweeps).

  Args:
    points: list of dicts; each needs numbers at x_key and y_key and a label at label_key
      (points sharing a label share a marker and a front, e.g. one beta sweep).
    x_key, y_key: the plotted fields, e.g. ``"rob_inacc"``, ``"rob_acc"``.
    label_key: field naming each point's series.
    path: output PNG.
    title: figure title.
    maximize: per axis, whether larger is better (decides the fronts).
    xlabel, ylabel: axis labels (default: a readable name of the key).
    front: draw each series' front through its non-dominated points.
    reference: optional ``(name, y)`` drawn as a horizontal dashed line (e.g. the core's
      natural accuracy in Fig. 4).
  """
  if not points:
    raise UserError(f"pareto: no points to plot for {path}")
  for p in points:
    for k in (x_key, y_key, label_key):
      if k not in p:
        raise UserError(f"pareto: point {p} has no field {k!r}")
  labels = list(dict.fromkeys(str(p[label_key]) for p in points))
  fig, ax = plt.subplots(figsize=(5.6, 4.4))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, label in enumerate(labels):
    group = [p for p in points if str(p[label_key]) == label]
    xs = np.array([float(p[x_key]) for p in group])
    ys = np.array([float(p[y_key]) for p in group])
    color = colors[i % len(colors)]
    # Earlier series are drawn larger so coinciding points stay visible as nested markers.
    ax.scatter(xs, ys, marker=MARKERS[i % len(MARKERS)], color=color, s=max(90 - 18 * i, 16),
               label=label, zorder=3 + i, edgecolors="white", linewidths=0.5)
    if front and len(group) > 1:
      idx = metrics.pareto_front(xs, ys, maximize)
      ax.plot(xs[idx], ys[idx], color=color, lw=1.0, alpha=0.7, zorder=2)
  if reference is not None:
    ax.axhline(float(reference[1]), color="0.4", ls="--", lw=0.8, label=str(reference[0]))
  ax.set_xlabel(xlabel or AXIS_NAMES.get(x_key, x_key))
  ax.set_ylabel(ylabel or AXIS_NAMES.get(y_key, y_key))
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best", framealpha=0.85)
  save_figure(fig, path)


def robustness_pareto(model_rows, path, title: str) -> None:
  """Figure 2: robust accuracy over robust inaccuracy (`tables.model_rows`), one point per model."""
  pareto(model_rows, "rob_inacc", "rob_acc", "model", path, title, maximize=(False, True))


def abstain_pareto(abstain_rows, path, title: str) -> None:
  """Figure 3: abstain-model robust accuracy over robust selection (`tables.abstain_rows`);
  the softmax-response thresholds of one model form one series."""
  rows = [{**r, "series": f"{r['model']} ({'RI' if r['selector'] == 'robustness' else 'SR'})"}
          for r in abstain_rows]
  pareto(rows, "rob_sel", "commit_prec", "series", path, title)


def composition_pareto(composition_rows, path, title: str) -> None:
  """Figure 4: natural over robust accuracy of 2-compositions (`tables.composition_rows`); the
  dashed line is the core's natural accuracy."""
  core = next(r for r in composition_rows if r["selector"] == "none")
  rows = [{**r, "series": (f"core {r['core']}" if r["selector"] == "none" else
                           f"{r['branch']} ({'RI' if r['selector'] == 'robustness' else 'SR'})")}
          for r in composition_rows]
  pareto(rows, "rob_acc", "nat_acc", "series", path, title,
         reference=(f"core {core['core']} nat_acc", core["nat_acc"]))
