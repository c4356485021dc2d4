"""Plots: the Pareto plotter, the three Pareto figures from reports (Fig. 2-4), decision regions."""
import os
import pathlib
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.transforms import Affine2D, Bbox

from jax_abstain.analysis import plots
from jax_abstain.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _image(path):
  assert path.read_bytes()[:8] == PNG_MAGIC
  return mpimg.imread(path)


def test_pareto_api_writes_a_png_with_series_and_fronts(tmp_path):
  points = [{"model": "ERA", "beta": b, "rob_inacc": ri, "rob_acc": ra}
            for b, ri, ra in [(0.1, 0.3, 83.8), (0.5, 0.5, 85.0), (1.0, 0.9, 86.0), (2.0, 1.0, 84.0)]]
  points += [{"model": "TRADES", "beta": 6.0, "rob_inacc": 1.34, "rob_acc": 86.5}]
  path = tmp_path / "sweep" / "fig2.png"
  plots.pareto(points, "rob_inacc", "rob_acc", "model", path, "beta sweep", maximize=(False, True))
  img = _image(path)
  assert img.shape[0] > 300 and img.shape[1] > 300
  assert not list(path.parent.glob(".*"))            # no temporary file left behind


def test_pareto_rejects_bad_points(tmp_path):
  with pytest.raises(UserError, match="no points"):
    plots.pareto([], "x", "y", "m", tmp_path / "a.png", "t")
  with pytest.raises(UserError, match="no field 'rob_acc'"):
    plots.pareto([{"m": "a", "rob_inacc": 1.0}], "rob_inacc", "rob_acc", "m", tmp_path / "a.png", "t")
  assert not (tmp_path / "a.png").exists()


def _report(acc, rob1, rob2, adv_conf=None):
  n = len(acc)
  cols = {"sample_idx": np.arange(n), "label": np.zeros(n, int), "pred": 1 - np.asarray(acc),
          "is_acc": np.asarray(acc), "conf": np.full(n, 0.9), "is_rob@0.1": np.asarray(rob1),
          "is_rob@0.2": np.asarray(rob2)}
  if adv_conf is not None:
    cols["adv_conf@0.2"] = np.asarray(adv_conf)
  return cols


NAMED = {"std": _report([1, 1, 1, 1, 0], [1, 1, 0, 0, 1], [1, 0, 0, 0, 1]),
         "era_0.1": _report([1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]),
         "era_0.5": _report([1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0],
                            adv_conf=[0.9, 0.8, 0.3, 0.95, 0.1])}


def test_figure_points_read_fig2_at_the_selection_radius():
  points = plots.figure_points(NAMED, "std", "0.1", taus=[0.5],
                               series=lambda m: "ERA" if m.startswith("era") else m)
  fig2 = {p["model"]: p for p in points["fig2"]}
  # At 2 eps = 0.2, era_0.1 is robust on samples 0-2 (all accurate) and std on 0 and 4
  # (sample 4 inaccurate).
  assert (fig2["era_0.1"]["eps"], fig2["era_0.1"]["rob_acc"], fig2["era_0.1"]["rob_inacc"]) == \
         ("0.2", 60.0, 0.0)
  assert (fig2["std"]["rob_acc"], fig2["std"]["rob_inacc"]) == (20.0, 20.0)
  assert [p["series"] for p in points["fig2"]] == ["std", "ERA", "ERA"]
  at_eps = plots.figure_points(NAMED, None, "0.1", radius="0.1")["fig2"]
  assert [p["eps"] for p in at_eps] == ["0.1"] * 3 and at_eps[1]["rob_acc"] == 60.0
  fig3 = [(p["series"], p["tau"], p["rob_sel"], p["commit_prec"]) for p in points["fig3"]]
  # era_0.5 selects {0, 1, 2, 3} at 0.2; accurate and robust at 0.1 among them: 0, 1, 3.
  # Softmax response at tau 0.5 selects {0, 1, 3}: all accurate and robust at 0.1.
  # std, the core, never abstains: not in Fig. 3.
  assert fig3 == [("ERA (RI)", None, 60.0, 100.0),
                  ("ERA (RI)", None, 80.0, 75.0), ("era_0.5 (SR)", 0.5, 60.0, 100.0)]
  fig4 = [(p["series"], p.get("tau"), p["nat_acc"], p["rob_acc"]) for p in points["fig4"]]
  # era_0.1 answers 0-2 (accurate, robust at 0.1), std 3-4 (accurate on 3, robust on 4 only).
  # era_0.5 (RI) answers 0-3 (wrong on 2), std 4 (wrong). era_0.5 (SR, tau 0.5) answers
  # 0, 1, 3, std 2 (accurate, not robust) and 4 (wrong).
  assert fig4 == [("core std alone", None, 80.0, 40.0), ("ERA + std (RI)", None, 80.0, 60.0),
                  ("ERA + std (RI)", None, 60.0, 60.0), ("era_0.5 + std (SR)", 0.5, 80.0, 60.0),
                  ("models alone", None, 60.0, 60.0), ("models alone", None, 60.0, 60.0)]
  assert [p["label"] for p in points["fig4"]] == ["std", "era_0.1 + std", "era_0.5 + std", "",
                                                  "era_0.1", "era_0.5"]
  assert plots.figure_points(NAMED, None, "0.1")["fig4"] is None
  # tau 0.99 selects nothing (max confidence 0.95): no point, its precision is undefined.
  none_selected = plots.figure_points(NAMED, None, "0.1", taus=[0.99])["fig3"]
  assert [p["selector"] for p in none_selected] == ["robustness"] * 3


def test_pareto_figures_write_the_three_names(tmp_path):
  paths = plots.pareto_figures(NAMED, "std", "0.1", tmp_path / "out", taus=[0.5, 0.9],
                               series=lambda m: "ERA" if m.startswith("era") else m, title="t")
  assert {k: p.name for k, p in paths.items()} == plots.FIGURES == {
      "fig2": "fig2_rob_acc_vs_rob_inacc.png", "fig3": "fig3_rob_sel_vs_rob_acc.png",
      "fig4": "fig4_composition.png"}
  for path in paths.values():
    img = _image(path)
    assert img.shape[0] > 300 and img.shape[1] > 300
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(plots.FIGURES.values())
  without_core = plots.pareto_figures(NAMED, None, "0.1", tmp_path / "two")
  assert sorted(without_core) == ["fig2", "fig3"]
  with pytest.raises(UserError, match="no column is_rob@0.4"):
    plots.pareto_figures(NAMED, "std", "0.2", tmp_path / "bad")
  assert not (tmp_path / "bad").exists()


def test_labels_and_fronts_options(tmp_path):
  points = [{"s": "a", "name": "p1", "x": 1.0, "y": 2.0}, {"s": "a", "name": "p2", "x": 1.0, "y": 2.0},
            {"s": "b", "name": "", "x": 2.0, "y": 1.0}]
  plots.pareto(points, "x", "y", "s", tmp_path / "l.png", "labels", label_key="name",
               fronts={"b"}, reference=("ref", 1.5))
  assert _image(tmp_path / "l.png").ndim == 3
  with pytest.raises(UserError, match="no field 'name'"):
    plots.pareto([{"s": "a", "x": 1, "y": 2}], "x", "y", "s", tmp_path / "m.png", "t",
                 label_key="name")


def _label_overlaps(fig, dpi=plots.DPI):
  """Overlaps of the figure's labels, measured at the PNG's dpi from the artists' window
  extents: pairs of intersecting labels, labels on a marker or the legend, labels outside the
  axes frame or the figure."""
  fig.set_dpi(dpi)
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  ax, = fig.axes
  labels = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts]
  markers = []
  for coll in ax.collections:   # each marker: its path under the collection's own transforms
    transforms, path = coll.get_transforms(), coll.get_paths()[0]
    edge = coll.get_linewidths()[0] * dpi / 72 / 2
    for i, xy in enumerate(coll.get_offset_transform().transform(coll.get_offsets())):
      scale = Affine2D(transforms[i % len(transforms)]).translate(*xy)
      markers.append(("marker", path.get_extents(scale).padded(edge)))
  if ax.get_legend() is not None:
    markers.append(("legend", ax.get_legend().get_window_extent(renderer)))
  meets = lambda a, b: Bbox.intersection(a, b) is not None
  found = [(a, b) for i, (a, box) in enumerate(labels) for b, other in labels[i + 1:]
           if meets(box, other)]
  found += [(a, b) for a, box in labels for b, other in markers if meets(box, other)]
  for what, outer in (("axes", ax.get_window_extent(renderer)), ("figure", fig.bbox)):
    found += [(a, what) for a, box in labels
              if not (outer.x0 <= box.x0 and box.x1 <= outer.x1
                      and outer.y0 <= box.y0 and box.y1 <= outer.y1)]
  return found


# Crowded fronts (7+ points within a few percent), at the top edge, with shared places, long
# names and a reference line: every label free of the others, of the markers and of the edges.
CROWDED = {
    "front": ([("era", f"era_{b}", 0.30 + 0.01 * i, 85.0 + 0.15 * i - 0.02 * i * i)
               for i, b in enumerate((0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 2, 4))]
              + [("trades", "trades", 0.34, 85.6), ("trades", "trades_ft", 0.36, 85.9),
                 ("std", "std", 0.0, 1.0)], None),
    "top_edge": ([("core", "std", 50.7, 97.3), ("warm", "trades_warm + std", 66.0, 97.3)]
                 + [("era", f"era_{b} + std", x, y) for b, x, y in
                    ((0.1, 70.3, 97.3), (0.5, 83.3, 97.4), (1, 84.8, 97.4), (2, 85.5, 97.4))]
                 + [("trades", "trades + std", 86.5, 97.4), ("ft", "trades_ft + std", 84.7, 97.3),
                    ("alone", "era_1", 94.4, 97.4), ("alone", "era_2", 94.4, 97.4),
                    ("alone", "era_0.5", 93.4, 97.0), ("alone", "trades", 92.9, 96.5)],
                 ("natural accuracy of std", 97.3)),
}


@pytest.mark.parametrize("case", sorted(CROWDED))
def test_crowded_labels_overlap_nothing_and_stay_inside(tmp_path, case):
  rows, reference = CROWDED[case]
  points = [{"s": s, "name": n, "x": x, "y": y} for s, n, x, y in rows]
  fig = plots.pareto(points, "x", "y", "s", tmp_path / "c.png", case, label_key="name",
                     reference=reference)
  assert _image(tmp_path / "c.png").ndim == 3
  assert len(fig.axes[0].texts) == len({(x, y) for _, _, x, y in rows})   # shared places: one
  assert _label_overlaps(fig) == []


def test_label_placement_is_deterministic(tmp_path):
  rows, reference = CROWDED["top_edge"]
  points = [{"s": s, "name": n, "x": x, "y": y} for s, n, x, y in rows]
  spots = [[(t.get_text(), t.get_position(), t.get_ha(), t.get_va()) for t in
            plots.pareto(points, "x", "y", "s", tmp_path / f"{i}.png", "t", label_key="name",
                         reference=reference).axes[0].texts] for i in range(2)]
  assert spots[0] == spots[1]
  assert (tmp_path / "0.png").read_bytes() == (tmp_path / "1.png").read_bytes()


def test_no_pyplot_and_no_backend_change():
  code = ("import matplotlib, sys; before = matplotlib.get_backend(); "
          "from jax_abstain.analysis import plots; "
          "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
          "assert matplotlib.get_backend() == before; print('ok')")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env={**os.environ, "MPLBACKEND": "svg",
                             "PYTHONPATH": str(pathlib.Path(__file__).parents[1])})
  assert proc.stdout.strip() == "ok", proc.stderr


def test_decision_regions_draws_one_panel_per_model(tmp_path):
  grid = 20
  points = plots.grid_points(grid)
  regions = (points[:, 0] > 0.5).astype(int)
  x = np.array([[0.2, 0.2], [0.8, 0.8], [0.4, 0.6]], np.float32)
  panels = [("a", regions, [1, 1, 0], [1, 0, 1], None), ("b", 1 - regions, [1, 0, 1], [0, 1, 1], regions)]
  plots.decision_regions(tmp_path / "r.png", panels, x, num_classes=2, eps=0.1, grid=grid)
  img = _image(tmp_path / "r.png")
  assert img.shape[1] > 1.6 * img.shape[0]            # two panels side by side


def _marker_centres(ax):
  """Display centres of every marker of the axes (each collection under its own offset
  transform, so markers drawn side by side are where they are seen)."""
  ax.get_figure().canvas.draw()
  return np.concatenate([c.get_offset_transform().transform(c.get_offsets())
                         for c in ax.collections])


def test_coincident_points_stand_side_by_side_and_are_named(tmp_path):
  # era_branch and trades at the same place (the synth Fig. 2 at eps): the old plot drew one
  # over the other. Now both are whole markers SPACING pt apart, at the same height, and one
  # label names both (no label_key: only the coincident place is labelled).
  points = [{"m": "era_branch", "x": 1.6, "y": 98.4}, {"m": "trades", "x": 1.6, "y": 98.4},
            {"m": "std", "x": 0.0, "y": 88.8}]
  fig = plots.pareto(points, "x", "y", "m", tmp_path / "c.png", "t", bounds=plots.BOUNDS)
  ax, = fig.axes
  centres = _marker_centres(ax)
  true = ax.transData.transform([[1.6, 98.4]])[0]
  pair = centres[np.abs(centres[:, 1] - true[1]) < 0.5]
  assert len(pair) == 2
  dpi_pt = fig.dpi / 72
  np.testing.assert_allclose(sorted(pair[:, 0] - true[0]),
                             [-plots.SPACING / 2 * dpi_pt, plots.SPACING / 2 * dpi_pt], atol=0.5)
  assert [t.get_text() for t in ax.texts] == ["era_branch, trades"]
  assert _label_overlaps(fig) == []
  legend, = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == [
      "era_branch", "trades", "std", "side by side: equal values"]


def test_percent_axes_stay_within_0_and_100(tmp_path):
  # Fig. 4's accuracy axis ran to about 105%. Points at 100 and at 0: no tick beyond the
  # bounds, and the axes reach past them by the edge room only (a few points, for the markers).
  points = [{"m": "a", "x": 0.0, "y": 100.0}, {"m": "b", "x": 40.0, "y": 97.0},
            {"m": "b", "x": 60.0, "y": 99.0}]
  fig = plots.pareto(points, "x", "y", "m", tmp_path / "b.png", "t", bounds=plots.BOUNDS,
                     label_key="m")
  ax, = fig.axes
  fig.canvas.draw()
  for lims, ticks, size in ((ax.get_xlim(), ax.get_xticks(), ax.bbox.width),
                            (ax.get_ylim(), ax.get_yticks(), ax.bbox.height)):
    shown = [t for t in ticks if lims[0] <= t <= lims[1]]
    assert shown and min(shown) >= 0 and max(shown) <= 100, shown
    room = plots.labels.EDGE_ROOM * fig.dpi / 72 / size * (lims[1] - lims[0]) * 1.01
    assert lims[0] >= -room and lims[1] <= 100 + room, lims
  assert ax.get_ylim()[1] < 100.5 and ax.get_xlim()[0] > -2
  assert _label_overlaps(fig) == []


def test_axis_names_are_the_tables_and_fig3_has_no_core(tmp_path):
  paths = plots.pareto_figures(NAMED, "std", "0.1", tmp_path, taus=[0.5],
                               series=lambda m: "ERA" if m.startswith("era") else m)
  assert plots.axis_label("commit_prec", "0.1") == (
      "commit_prec @0.1 [%]: robust accuracy of the selected")
  points = plots.figure_points(NAMED, "std", "0.1", taus=[0.5])
  # std is the core: it never abstains, so Fig. 3 (abstain models) leaves it out.
  assert {p["model"] for p in points["fig3"]} == {"era_0.1", "era_0.5"}
  assert all(pathlib.Path(p).stat().st_size > 10_000 for p in paths.values())


def test_every_glyph_of_a_pareto_plot_is_in_the_legend(tmp_path):
  points = [{"m": "era", "x": 0.3, "y": 80.0}, {"m": "era", "x": 0.5, "y": 85.0},
            {"m": "std", "x": 0.0, "y": 50.0}]
  fig = plots.pareto(points, "x", "y", "m", tmp_path / "g.png", "t", maximize=(False, True),
                     reference=("natural accuracy of std", 60.0), xlabel="X", ylabel="Y")
  legend, = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == [
      "era", "std", "Pareto front of a series", "natural accuracy of std"]
  ax, = fig.axes
  assert (ax.get_xlabel(), ax.get_ylabel()) == ("X", "Y")


def test_decision_regions_label_every_axis_and_the_hatching(tmp_path):
  grid = 20
  points = plots.grid_points(grid)
  regions = (points[:, 0] > 0.5).astype(int)
  x = np.array([[0.2, 0.2], [0.8, 0.8], [0.4, 0.6]], np.float32)
  panels = [("a", regions, [1, 1, 0], [1, 0, 1], None),
            ("H", 1 - regions, [1, 0, 1], [0, 1, 1], regions)]
  fig = plots.decision_regions(tmp_path / "r.png", panels, x, num_classes=2, eps=0.1, grid=grid)
  assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
  legend, = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == [
      "region predicted as class 0", "region predicted as class 1",
      "H: the core answers (the branch abstains)"]
  assert legend.legend_handles[-1].get_hatch() == plots.HATCH
