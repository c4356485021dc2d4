"""Point labels of a scatter plot, placed clear of each other, of the markers and of the frame.

    labels.place(fig, ax, [((x, y), "era_0.5"), ...], fontsize=7)   # after markers and legend
    dx = labels.side_by_side(points, "rob_acc", "nat_acc")   # [pt] for coincident markers
    labels.clamp(ax, (0, 100))                                # percent axes, no tick beyond

Everything is measured in display coordinates (renderer extents of the markers, the legend and
the text). Each label has candidate spots around its point (`DIRECTIONS` times `DISTANCES`):
near spots first, then spots further out with a leader line. A spot overlaps something when its
text box leaves the axes or meets a marker of any collection of the axes, the legend, another
label or a leader line, or when its leader meets another marker, the legend or a label; a leader
crossing another leader is the lesser evil. Among the spots with the fewest overlaps, then
crossings, the cheapest wins: a spot costs more the further out it is, if its box crosses a line
of the plot (a front, a reference line), if it lies nearer another marker than its own point, or
if it points towards the neighbouring points rather than away from them.

The most crowded points choose first; then each label that overlaps or crosses something moves
in turn to its best spot among all the others (`POLISH`); labels left overlapping choose first
in the next round (`ROUNDS`); if every round leaves overlaps, the axes margins grow
(`MARGIN_GROWTH`, while that helps) and all labels are placed again. The placement with the
fewest overlaps, then crossings, is kept. No random jitter: the same figure always gets the
same labels.
"""
import math

import numpy as np
from matplotlib import ticker
from matplotlib.lines import Line2D
from matplotlib.transforms import Affine2D

# Directions around a point (degrees, in order of preference) and distances [pt] of a label
# from its marker's edge; from LEADER_FROM on the label gets a leader line.
DIRECTIONS = (0, 180, 90, 270, 45, 135, 315, 225, 22.5, 157.5, 337.5, 202.5, 67.5, 112.5,
              292.5, 247.5)
DISTANCES = (0, 2, 5, 9, 14, 20, 28, 38, 50, 65, 80, 100, 125, 150, 180)
LEADER_FROM = 4
GAP, PAD = 1.5, 1.5   # pt: between a marker and its label's box; air around every label box
SPACE = 2             # pt: more air left and right of a placed label (two labels read as two)
CROWD = 50            # pt: markers nearer than this are a point's neighbours
MARGIN_GROWTH = (1.0, 1.6, 2.3, 3.2)
ROUNDS = 3            # orders tried per margin
POLISH = 4            # sweeps moving each label to its best spot among the others
# Soft costs [pt]: a leader line; per plotted line segment the box crosses; a label without
# leader nearer another marker than its own point; pointing towards the neighbours (up to twice
# AWAY_COST); a step down DIRECTIONS.
LEADER_COST, LINE_COST, AMBIGUOUS_COST, AWAY_COST, DIRECTION_COST = 6.0, 12.0, 20.0, 6.0, 0.4
SPACING = 9.0   # pt between the centres of coincident markers drawn side by side


def _place_key(p, x_key, y_key):
  """Where a point is, to the tables' two decimals: points with one key are coincident."""
  return round(float(p[x_key]), 2), round(float(p[y_key]), 2)


def side_by_side(points, x_key, y_key) -> list:
  """Per point, its horizontal offset [pt]: coincident points (the same numbers in the tables)
  are drawn side by side around their place, so no marker hides another; others 0."""
  places = {}
  for i, p in enumerate(points):
    places.setdefault(_place_key(p, x_key, y_key), []).append(i)
  dx = [0.0] * len(points)
  for group in places.values():
    for j, i in enumerate(group):
      dx[i] = (j - (len(group) - 1) / 2) * SPACING
  return dx


def point_items(points, x_key, y_key, label_key) -> list:
  """`place`'s items, ``((x, y), text)`` per labelled place of plot points (dicts with the
  fields x_key, y_key and ``_series``): with `label_key`, every place whose points carry a
  label; without, the places where several points coincide (named by series), so the legend
  and the label together say which markers stand side by side there."""
  named = {}
  for p in points:
    named.setdefault(_place_key(p, x_key, y_key), []).append(p)
  items = []
  for xy, group in named.items():
    names = [str(p[label_key]) for p in group if str(p[label_key])] if label_key else (
        [str(p["_series"]) for p in group] if len(group) > 1 else [])
    if names:
      items.append((xy, ", ".join(dict.fromkeys(names))))
  return sorted(items)


def _marker_boxes(ax, pt):
  """Centres [M, 2] and boxes [M, 4] (x0, y0, x1, y1) in display coordinates of every marker
  of the axes' collections (pt: pixels per point)."""
  centres, boxes = [], []
  for coll in ax.collections:
    paths, sizes, widths = coll.get_paths(), coll.get_sizes(), coll.get_linewidths()
    for i, (x, y) in enumerate(coll.get_offset_transform().transform(coll.get_offsets())):
      size = sizes[i % len(sizes)] if len(sizes) else 36.0
      edge = (widths[i % len(widths)] if len(widths) else 0.0) * pt / 2
      scale = Affine2D().scale(math.sqrt(size) * pt).translate(x, y)
      centres.append((x, y))
      boxes.append(paths[i % len(paths)].get_extents(scale).padded(edge).extents)
  return np.reshape(centres, (-1, 2)), np.reshape(boxes, (-1, 4))


def _overlaps(a, b):
  """[A, B]: whether boxes a [A, 4] and b [B, 4] (x0, y0, x1, y1) share an area."""
  a, b = a[:, None], b[None]
  return ((a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2])
          & (a[..., 1] < b[..., 3]) & (b[..., 1] < a[..., 3]))


def _hits(segments, boxes):
  """[A, B]: whether segments [A, 4] (x0, y0, x1, y1) meet boxes [B, 4]: their bounding boxes
  overlap and the box's corners do not all lie on one side of the segment's line."""
  s, b = segments[:, None], boxes[None]
  spans = ((np.minimum(s[..., 0], s[..., 2]) <= b[..., 2])
           & (np.maximum(s[..., 0], s[..., 2]) >= b[..., 0])
           & (np.minimum(s[..., 1], s[..., 3]) <= b[..., 3])
           & (np.maximum(s[..., 1], s[..., 3]) >= b[..., 1]))
  dx, dy = s[..., 2] - s[..., 0], s[..., 3] - s[..., 1]
  sides = [dx * (b[..., j] - s[..., 1]) - dy * (b[..., i] - s[..., 0])
           for i, j in ((0, 1), (0, 3), (2, 1), (2, 3))]
  return spans & (np.minimum.reduce(sides) <= 0) & (np.maximum.reduce(sides) >= 0)


def _crosses(a, b):
  """[A, B]: whether segments a [A, 4] and b [B, 4] cross (at a point inside both)."""
  def side(s, t, u):
    return ((t[..., 0] - s[..., 0]) * (u[..., 1] - s[..., 1])
            - (t[..., 1] - s[..., 1]) * (u[..., 0] - s[..., 0]))
  p, q, r, s = a[:, None, :2], a[:, None, 2:], b[None, :, :2], b[None, :, 2:]
  return (side(p, q, r) * side(p, q, s) < 0) & (side(r, s, p) * side(r, s, q) < 0)


def _candidates(p, half, size, pt, away):
  """Boxes [K, 4], anchors [K, 2], leader flags [K] and costs [K] of the spots around
  display point p; an anchor is where the box touches its side of the square around p, as a
  fraction of the box's width and height (the text's alignment: it grows away from p).

  half: half size of its marker box; size: the text's width and height; pt: pixels per point;
  away: vector (length <= 1) pointing away from its neighbours.
  """
  angle = np.radians(np.asarray(DIRECTIONS, float))[:, None]
  dist = np.asarray(DISTANCES, float)[None, :]
  c, s = np.cos(angle), np.sin(angle)
  ring = (half + (GAP + dist) * pt) / np.maximum(abs(c), abs(s))   # on a square around p
  ax_, ay = p[0] + ring * c, p[1] + ring * s
  w, h = size
  fx = np.broadcast_to(np.where(c > 0.3, 0.0, np.where(c < -0.3, 1.0, 0.5)), ring.shape)
  fy = np.broadcast_to(np.where(s > 0.3, 0.0, np.where(s < -0.3, 1.0, 0.5)), ring.shape)
  x0, y0 = ax_ - fx * w, ay - fy * h
  boxes = np.stack([x0, y0, x0 + w, y0 + h], -1).reshape(-1, 4)
  anchors = np.stack([fx, fy], -1).reshape(-1, 2)
  leader = np.broadcast_to(dist >= LEADER_FROM, ring.shape)
  rank = np.arange(len(DIRECTIONS))[:, None]
  cost = (dist + rank * DIRECTION_COST + LEADER_COST * leader
          + AWAY_COST * (1 - c * away[0] - s * away[1]))
  return boxes, anchors, leader.ravel(), cost.ravel()


def _exits(p, q, box):
  """[K, 2]: where the segments from p (inside `box` [4]) to q [K, 2] leave the box."""
  d = q - p
  with np.errstate(divide="ignore", invalid="ignore"):
    t = np.where(d > 0, (box[2:] - p) / d, np.where(d < 0, (box[:2] - p) / d, np.inf))
  return p + np.clip(t.min(1), 0.0, 1.0)[:, None] * d


def _score(p, own, boxes, leader, scene):
  """Overlaps [K], crossings [K] and extra cost [K] of label boxes [K, 4] of point p (with
  leader lines where `leader`; own: the box of the markers at p).

  Overlaps: of a box with the frame, a marker, the legend, a label or a leader; of a leader,
  once out of `own`, with another marker (shrunk by a pixel: a leader may leave along the
  edge of touching markers), the legend or a label. Crossings (the lesser evil): of a leader
  with another leader.
  """
  pad = boxes + scene["pad"] * np.array([-1, -1, 1, 1])
  f = scene["frame"]
  bad = (pad[:, 0] < f[0]) | (pad[:, 1] < f[1]) | (pad[:, 2] > f[2]) | (pad[:, 3] > f[3])
  placed, leaders = np.reshape(scene["placed"], (-1, 4)), np.reshape(scene["leaders"], (-1, 4))
  walls = np.concatenate([scene["blocks"], placed])   # markers, legend, labels
  bad = bad + _overlaps(pad, walls).sum(1) + _hits(leaders, pad).sum(0)
  q = np.clip(p, boxes[:, :2], boxes[:, 2:])           # a leader's end: nearest box point
  segments = np.concatenate([np.broadcast_to(p, q.shape), q], 1)
  away = np.hypot(*(scene["centres"] - p).T) > 0.5   # markers not at p
  walls = np.concatenate([scene["markers"][away] + np.array([1, 1, -1, -1]),
                          scene["blocks"][len(scene["markers"]):], placed])
  bad = bad + leader * _hits(np.concatenate([_exits(p, q, own), q], 1), walls).sum(1)
  crossed = leader * _crosses(segments, leaders).sum(1)
  extra = LINE_COST * _hits(scene["lines"], pad).sum(0)
  others = scene["centres"][away]
  if len(others):   # distance of each other marker to each box: [K, M]
    gap = np.maximum(boxes[:, None, :2] - others[None], others[None] - boxes[:, None, 2:])
    nearest = np.hypot(*np.maximum(gap, 0).transpose(2, 0, 1)).min(1)
    extra = extra + AMBIGUOUS_COST * (~leader & (nearest < np.hypot(*(q - p).T) + scene["pad"]))
  return bad, crossed, extra


def _choose(p, size, scene, keep=None):
  """The cheapest spot of a label of `size` (display width, height) for display point p, or
  the spot `keep` re-scored: ``((overlaps, crossings), box [4], anchor [2], leader, segment,
  space [4])`` (`_candidates`; segment: the leader line [4] or None; space: the box with the
  air other labels keep from it)."""
  centres, markers = scene["centres"], scene["markers"]
  dist = np.hypot(*(centres - p).T)
  own = markers[dist <= 0.5]
  own = np.concatenate([own[:, :2].min(0), own[:, 2:].max(0)]) if len(own) else np.r_[p, p]
  half = max(own[2] - p[0], p[0] - own[0], own[3] - p[1], p[1] - own[1], 0.0)
  near = (dist > 0.5) & (dist < CROWD * scene["pt"])
  push = ((p - centres[near]) / dist[near, None] * (1 - dist[near, None] / (CROWD * scene["pt"])))
  away = push.sum(0) / max(np.hypot(*push.sum(0)), 1.0)
  if keep is None:
    boxes, anchors, leader, cost = _candidates(p, half, size, scene["pt"], away)
  else:
    boxes, anchors = keep[1][None], keep[2][None]
    leader, cost = np.array([keep[3]]), np.zeros(1)
  bad, crossed, extra = _score(p, own, boxes, leader, scene)
  k = np.lexsort((cost + extra, crossed, bad))[0]
  segment = np.concatenate([p, np.clip(p, boxes[k, :2], boxes[k, 2:])]) if leader[k] else None
  air = np.tile(scene["pad"] + SPACE * scene["pt"] * np.array([1, 0]), 2) * [-1, -1, 1, 1]
  return ((int(bad[k]), int(crossed[k])), boxes[k], anchors[k], bool(leader[k]), segment,
          boxes[k] + air)


def _around(scene, spots, skip):
  """The scene with the labels of `spots` (index -> `_choose` result) placed, but `skip`."""
  others = [spot for j, spot in spots.items() if j != skip]
  return dict(scene, placed=[s[5] for s in others],
              leaders=[s[4] for s in others if s[4] is not None])


EDGE_ROOM = 7.0   # pt beyond a bound that the data reaches: markers and labels there fit


class _TicksWithin(ticker.MaxNLocator):
  """Matplotlib's default tick choice (`matplotlib.ticker.AutoLocator`'s settings) without
  the ticks outside ``bounds``: the room beyond a bound gets no tick such as 105%."""

  def __init__(self, bounds):
    super().__init__(nbins="auto", steps=[1, 2, 2.5, 5, 10])
    self.bounds = bounds

  def tick_values(self, vmin, vmax):
    ticks = super().tick_values(vmin, vmax)
    return ticks[(ticks >= self.bounds[0] - 1e-9) & (ticks <= self.bounds[1] + 1e-9)]


def clamp(ax, bounds) -> None:
  """Keeps both axes within ``bounds = (low, high)``, e.g. (0, 100) for percent: the
  autoscaled limits (with their margins) are cut at the bounds, no tick lies beyond them, and
  where the data reach a bound the axis gets `EDGE_ROOM` points of room (no tick) so the
  markers and labels there are whole. None leaves the axes as they are."""
  if bounds is None:
    return
  ax.autoscale_view()
  box, per_pt = ax.get_window_extent(), ax.get_figure().dpi / 72
  for axis, lims, set_lims, size in ((ax.xaxis, ax.get_xlim(), ax.set_xlim, box.width),
                                     (ax.yaxis, ax.get_ylim(), ax.set_ylim, box.height)):
    low, high = max(lims[0], bounds[0]), min(lims[1], bounds[1])
    room = EDGE_ROOM * per_pt / max(size, 1.0) * (high - low)
    set_lims(low - room * (low == bounds[0]), high + room * (high == bounds[1]))
    axis.set_major_locator(_TicksWithin(bounds))


def _scene(fig, ax, bounds=None):
  """Draws the figure and freezes what the labels are placed against (the axis limits within
  `bounds`, the legend's spot); returns the obstacles in display coordinates and the frozen
  state."""
  clamp(ax, bounds)
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  ax.set_xlim(ax.get_xlim())
  ax.set_ylim(ax.get_ylim())
  pt = renderer.points_to_pixels(1.0)
  centres, markers = _marker_boxes(ax, pt)
  blocks, legend, loc = [markers], ax.get_legend(), None
  if legend is not None:
    box = legend.get_window_extent(renderer)
    loc = tuple(box.transformed(ax.transAxes.inverted()).p0)
    legend.set_loc(loc)
    blocks.append(np.reshape(box.extents, (1, 4)))
  lines = [ln.get_transform().transform_path(ln.get_path()).vertices for ln in ax.lines]
  lines = [np.concatenate([v[:-1], v[1:]], 1) for v in lines if len(v) > 1]
  lines = np.concatenate(lines) if lines else np.zeros((0, 4))
  return {"renderer": renderer, "pt": pt, "pad": PAD * pt, "centres": centres,
          "markers": markers, "blocks": np.concatenate(blocks),
          "frame": ax.get_window_extent(renderer).extents,
          "lines": lines[np.isfinite(lines).all(1)], "state": (ax.get_xlim(), ax.get_ylim(), loc)}


def _text_size(ax, text, fontsize, renderer):
  """Display width and height of a label."""
  probe = ax.text(0, 0, text, fontsize=fontsize)
  extent = probe.get_window_extent(renderer)
  probe.remove()
  return extent.width, extent.height


def _place_all(ax, items, sizes, scene, order):
  """Places the labels one by one in `order` (indices of items), then moves each label that
  overlaps or crosses something to its best spot among all the others, in turn, until none
  moves (at most `POLISH` sweeps).

  Returns:
    ``((overlaps, crossings), chosen, failed)``: chosen holds ``(xy, text, anchor,
    (ha, va), end)`` (the text's position and alignment, the leader's end or None; positions
    in data coordinates), failed the indices of the labels that overlap something or cross
    a leader.
  """
  points = {i: ax.transData.transform(items[i][0]) for i in order}
  spots = {}
  for i in order:
    spots[i] = _choose(points[i], sizes[i], _around(scene, spots, i))
  check = lambda i: _choose(points[i], sizes[i], _around(scene, spots, i), spots[i])[0]
  for _ in range(POLISH):   # labels free of overlaps and crossings stay where they are
    moved = False
    for i in (i for i in order if any(check(i))):
      spot = _choose(points[i], sizes[i], _around(scene, spots, i))
      moved = moved or not np.array_equal(spot[1], spots[i][1])
      spots[i] = spot
    if not moved:
      break
  checks = {i: check(i) for i in order}
  total = (sum(c[0] for c in checks.values()), sum(c[1] for c in checks.values()))
  to_data, chosen = ax.transData.inverted(), []
  for i in order:
    _, box, frac, _, segment, _ = spots[i]
    anchor = box[:2] + frac * (box[2:] - box[:2])
    align = (("left", "center", "right")[int(2 * frac[0])],
             ("bottom", "center", "top")[int(2 * frac[1])])
    chosen.append((items[i][0], items[i][1], tuple(to_data.transform(anchor)), align,
                   None if segment is None else tuple(to_data.transform(segment[2:]))))
  return total, chosen, [i for i in order if any(checks[i])]


def _crowded_first(ax, items, pt):
  """Indices of items, those with the most neighbours within `CROWD` first."""
  points = [tuple(ax.transData.transform(xy)) for xy, _ in items]
  crowd = [sum(math.dist(p, o) < CROWD * pt for o in points) for p in points]
  return sorted(range(len(items)), key=lambda i: (-crowd[i], points[i]))


def _draw(ax, chosen, fontsize, zorder):
  """Adds the labels (and leader lines) at their chosen spots."""
  for xy, text, anchor, (ha, va), end in chosen:
    ax.text(*anchor, text, ha=ha, va=va, fontsize=fontsize, zorder=zorder)
    if end is not None:
      ax.add_artist(Line2D([xy[0], end[0]], [xy[1], end[1]], color="0.55", lw=0.6, zorder=2.5))


def place(fig, ax, items, *, fontsize=7, zorder=20, bounds=None) -> int:
  """Labels points of `ax` (call after its markers, lines and legend are drawn).

  Tries the margins of `MARGIN_GROWTH` in turn while every placement overlaps something and
  the last growth helped, each with up to `ROUNDS` orders (the labels that found no free spot
  move to the front), and keeps the first placement without overlaps and crossings, else the
  one with the fewest overlaps, then crossings.

  Args:
    fig: the figure of `ax`, on a canvas that can draw (e.g. `plots.new_figure`).
    ax: the axes; its limits and legend position are frozen by the placement.
    items: list of ``((x, y), text)`` in data coordinates.
    fontsize: label font size [pt].
    zorder: of the labels (above the markers).
    bounds: ``(low, high)`` the grown axis limits stay within (`clamp`), or None.

  Returns:
    The number of overlaps left (0 unless the points are too crowded even so).
  """
  if not items:
    return 0
  base, legend, best, sizes = ax.margins(), ax.get_legend(), None, None
  for growth in MARGIN_GROWTH:
    ax.set_autoscale_on(True)
    ax.margins(x=base[0] * growth, y=base[1] * growth)
    if legend is not None:
      legend.set_loc("best")
    scene = _scene(fig, ax, bounds)
    sizes = sizes or [_text_size(ax, text, fontsize, scene["renderer"]) for _, text in items]
    order, before = _crowded_first(ax, items, scene["pt"]), best and best[0]
    for _ in range(ROUNDS):
      total, chosen, failed = _place_all(ax, items, sizes, scene, order)
      if best is None or total < best[0]:
        best = (total, chosen, scene["state"])
      if not failed:
        break
      order = failed + [i for i in order if i not in failed]
    if best[0][0] == 0 or (before is not None and best[0] >= before):
      break   # wider margins would not uncross leaders, or did not help
  total, chosen, (xlim, ylim, loc) = best
  ax.set_xlim(xlim)
  ax.set_ylim(ylim)
  if legend is not None:
    legend.set_loc(loc)
  _draw(ax, chosen, fontsize, zorder)
  return total[0]
