"""Plots: the Pareto API (Fig. 2-4), the figure wrappers on table rows, decision regions."""
import matplotlib.image as mpimg
import numpy as np
import pytest

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


def test_figure_wrappers_take_table_rows(tmp_path):
  models = [{"model": "std", "nat_acc": 100.0, "rob_acc": 86.8, "rob_inacc": 0.0},
            {"model": "era", "nat_acc": 98.4, "rob_acc": 98.4, "rob_inacc": 0.1}]
  abstain = [{"model": "era", "selector": "robustness", "tau": None, "rob_sel": 90.7, "commit_prec": 100.0},
             {"model": "era", "selector": "softmax", "tau": 0.5, "rob_sel": 95.0, "commit_prec": 97.0},
             {"model": "era", "selector": "softmax", "tau": 0.9, "rob_sel": 80.0, "commit_prec": 99.0}]
  comps = [{"branch": "", "core": "std", "selector": "none", "nat_acc": 100.0, "rob_acc": 86.8},
           {"branch": "era", "core": "std", "selector": "robustness", "nat_acc": 100.0, "rob_acc": 97.1}]
  plots.robustness_pareto(models, tmp_path / "f2.png", "Fig. 2")
  plots.abstain_pareto(abstain, tmp_path / "f3.png", "Fig. 3")
  plots.composition_pareto(comps, tmp_path / "f4.png", "Fig. 4")
  for name in ("f2.png", "f3.png", "f4.png"):
    assert _image(tmp_path / name).ndim == 3


def test_decision_regions_draws_one_panel_per_model(tmp_path):
  grid = 20
  points = plots.grid_points(grid)
  regions = (points[:, 0] > 0.5).astype(int)
  x = np.array([[0.2, 0.2], [0.8, 0.8], [0.4, 0.6]], np.float32)
  panels = [("a", regions, [1, 1, 0], [1, 0, 1], None), ("b", 1 - regions, [1, 0, 1], [0, 1, 1], regions)]
  plots.decision_regions(tmp_path / "r.png", panels, x, num_classes=2, eps=0.1, grid=grid)
  img = _image(tmp_path / "r.png")
  assert img.shape[1] > 1.6 * img.shape[0]            # two panels side by side
