"""Plots (PNG, matplotlib Agg): decision regions of 2-D models (Figure 1).

    points = plots.grid_points(200)                      # [200*200, 2]
    plots.decision_regions(path, [(title, predict(points), is_acc, is_rob, None)], x, ...)

Each panel holds a model's class ids on the grid and the evaluated points split into
robust-accurate, robust-inaccurate and non-robust (the paper's Figure 1). Files are written
atomically.
"""
import os
import pathlib
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

REGION_COLORS = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fdd0a2")


def save_figure(fig, path) -> None:
  """Saves `fig` as PNG through a temporary file and an atomic rename."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
  finally:
    plt.close(fig)
    pathlib.Path(tmp).unlink(missing_ok=True)


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
