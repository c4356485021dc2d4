"""Golden parity with the official AutoAttack code (pyautoattack, PyTorch) on the same weights.

The official classes are driven directly: DLR and targeted DLR on fixed logits; APGD-CE and
APGD-T iterates from the same start point (``attack_single_run(x_init=...)`` there, the
random start replaced here); FAB-T, which has no randomness in its first restart, point by
point; Square, whose random stream differs, by its query counts on a linear model whose
minimal perturbation is known; the standard ensemble by its per-sample result on a small CNN
trained here. Every official iterate is read off the inputs its model is called with. The tolerances are float32 rounding: a momentum of 0.3 instead of 0.75, or a
DLR denominator built from other sorted logits, fails here.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_abstain.attacks  # noqa: F401  (loads the submodules read below)
from jax_abstain import attacks
from jax_abstain.attacks import common

apgd_module = sys.modules["jax_abstain.attacks.apgd"]
fab_module = sys.modules["jax_abstain.attacks.fab"]


def _official(name):
  """pyautoattack's module `name` (torch is a test extra; both skip cleanly without it)."""
  pytest.importorskip("torch")
  return pytest.importorskip(f"pyautoattack.{name}")


def _mlp_weights(d=20, h=16, c=5, seed=0, scale=3.0):
  rng = np.random.default_rng(seed)
  w1 = (rng.normal(size=(d, h)) / np.sqrt(d) * scale).astype(np.float32)
  w2 = (rng.normal(size=(h, c)) / np.sqrt(h) * scale).astype(np.float32)
  return w1, w2


def _torch_mlp(w1, w2):
  """The same tanh MLP in PyTorch; records every batch it is called with (`.calls`)."""
  import torch

  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.l1 = torch.nn.Linear(w1.shape[0], w1.shape[1], bias=False)
      self.l2 = torch.nn.Linear(w2.shape[0], w2.shape[1], bias=False)
      self.calls = []

    def forward(self, z):
      self.calls.append(z.detach().numpy().copy())
      return self.l2(torch.tanh(self.l1(z)))

  net = Net()
  with torch.no_grad():
    net.l1.weight.copy_(torch.from_numpy(w1.T.copy()))
    net.l2.weight.copy_(torch.from_numpy(w2.T.copy()))
  return net


def test_dlr_and_targeted_dlr_equal_the_official_losses():
  torch = pytest.importorskip("torch")
  apgd_pt = _official("autopgd_base")
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 10)).astype(np.float32) * 3
  y = rng.integers(0, 10, size=64)
  y[:16] = logits[:16].argmax(1)  # correctly classified rows (y is the top class) and others
  target = (y + 1 + rng.integers(0, 9, size=64)) % 10
  official = apgd_pt.APGDAttack_targeted(lambda z: z, eps=0.1, device="cpu")
  official.y_target = torch.from_numpy(target).long()
  lt, yt = torch.from_numpy(logits), torch.from_numpy(y).long()
  np.testing.assert_allclose(common.dlr(jnp.asarray(logits), jnp.asarray(y)),
                             official.dlr_loss(lt, yt).numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      common.dlr_targeted(jnp.asarray(logits), jnp.asarray(y), jnp.asarray(target)),
      official.dlr_loss_targeted(lt, yt).numpy(), rtol=1e-6, atol=1e-6)


def _apgd_iterates(norm, loss, n_iter, eps, seed=0):
  """Runs one APGD (ours and the official) from the same start on a 20-16-5 tanh MLP, 16
  samples. Returns (ours, theirs, horizon, robust): the n_iter + 1 points [T, B, D] each run
  evaluates (start, then one per iteration), per sample the last iterate that both must agree
  on, and our [B] robust flags.

  The horizon of a sample is its first misclassified iterate (we freeze a broken sample, the
  official code walks on; either way it is broken) or the first iterate whose loss is within
  float32 rounding (1e-6) of the best or the previous loss (but not equal: the same point
  gives the same loss in each framework), after which the two could take
  different checkpoint decisions for a reason that is no error of either.
  """
  import torch
  apgd_pt = _official("autopgd_base")
  w1, w2 = _mlp_weights(seed=seed)
  f = lambda z: jnp.tanh(z @ w1) @ w2
  rng = np.random.default_rng(seed + 1)
  x = rng.uniform(0.2, 0.8, size=(16, w1.shape[0])).astype(np.float32)
  y = np.array(jnp.argmax(f(jnp.asarray(x)), -1))
  t = rng.uniform(-1, 1, size=x.shape).astype(np.float32)
  t /= np.abs(t).max(1, keepdims=True) if norm == "linf" else np.sqrt((t ** 2).sum(1, keepdims=True))
  x_init = np.clip(x + eps * t, 0, 1).astype(np.float32)
  target = np.argsort(-np.asarray(f(jnp.asarray(x))), -1)[:, 1]  # the 2nd most likely class

  net = _torch_mlp(w1, w2)
  kw = dict(n_iter=n_iter, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, device="cpu")
  if loss == "dlr-targeted":
    official = apgd_pt.APGDAttack_targeted(net, **kw)
    official.y_target = torch.from_numpy(target).long()
    loss_fn = official.dlr_loss_targeted
  else:
    official = apgd_pt.APGDAttack(net, loss=loss, **kw)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
  official.init_hyperparam(torch.from_numpy(x))
  official.attack_single_run(torch.from_numpy(x), torch.from_numpy(y).long(),
                             x_init=torch.from_numpy(x_init))
  theirs = np.stack(net.calls)

  calls = []

  def recording(z):
    jax.debug.callback(lambda a: calls.append(np.asarray(a)), z, ordered=True)
    return f(z)

  start = common.random_start
  common.random_start = lambda keys, x, eps, norm: jnp.asarray(x_init)
  try:
    res = apgd_module.apgd_single_run(
        recording, jnp.asarray(x), jnp.asarray(y), common.example_keys(jax.random.key(0), 16),
        eps=eps, norm=norm, n_iter=n_iter, loss=loss, best_loss=False,
        y_target=jnp.asarray(target) if loss == "dlr-targeted" else None)
    jax.block_until_ready(res)
  finally:
    common.random_start = start
  ours = np.stack(calls)

  logits = np.stack([net(torch.from_numpy(z)).detach().numpy() for z in theirs])
  flipped = logits.argmax(-1) != y
  values = np.stack([loss_fn(torch.from_numpy(lg), torch.from_numpy(y).long()).numpy()
                     for lg in logits])
  best_before = np.maximum.accumulate(values, 0)
  near_tie = np.zeros_like(flipped)
  close = lambda a, b: (a != b) & (np.abs(a - b) < 1e-6)
  near_tie[1:] = close(values[1:], best_before[:-1]) | close(values[1:], values[:-1])
  stop = flipped | near_tie
  horizon = np.where(stop.any(0), stop.argmax(0), n_iter)
  return ours, theirs, horizon, np.asarray(res.robust), flipped


@pytest.mark.parametrize("norm,loss,eps,followed", [("linf", "ce", 0.03, 20), ("l2", "ce", 0.2, 8),
                                                    ("linf", "dlr-targeted", 0.06, 20)])
def test_apgd_iterates_equal_the_official_ones_from_the_same_start(norm, loss, eps, followed):
  # 30 iterations: checkpoints after iterations 5, 10, 14, 17, 19, 20, ..., 29. In the Linf
  # runs most followed samples halve their step and restart from their best point at most of
  # them (the official check_oscillation fires); the L2 runs reach a plateau (near-equal
  # losses) after the first two checkpoints, where both keep the step.
  ours, theirs, horizon, robust, flipped = _apgd_iterates(norm, loss, n_iter=30, eps=eps)
  assert ours.shape == theirs.shape == (31, 16, 20)
  assert np.sum(horizon >= followed) >= 8, horizon  # enough samples followed long enough
  compared = (np.arange(31)[:, None] <= horizon[None, :])[..., None]
  np.testing.assert_allclose(np.where(compared, ours, 0), np.where(compared, theirs, 0),
                             atol=1e-5)
  # Broken exactly where an official iterate was misclassified before the horizon.
  seen = flipped & (np.arange(31)[:, None] <= horizon[None, :])
  assert np.all(~robust[seen.any(0)])


def _linear(c=4, n=12, d=30, seed=0):
  """Linear logits with every boundary through the box centre and inputs in [0.4, 0.6]: the
  minimal Linf / L2 perturbation is ``min_j m_j / ||w_y - w_j||_{1 / 2}`` (checked to stay
  inside the box)."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d, c)).astype(np.float32)
  b = (-0.5 * w.sum(0)).astype(np.float32)
  x = rng.uniform(0.4, 0.6, size=(n, d)).astype(np.float32)
  z = x @ w + b
  y = z.argmax(1)
  m = z[np.arange(n), y][:, None] - z
  dw = w[:, y].T[:, :, None] - w[None]
  other = np.arange(c)[None] != y[:, None]
  with np.errstate(invalid="ignore"):  # 0 / 0 in the column of y, masked
    dist = {"linf": np.where(other, m / np.abs(dw).sum(1), np.inf).min(1),
            "l2": np.where(other, m / np.sqrt((dw ** 2).sum(1)), np.inf).min(1)}
  assert dist["linf"].max() < 0.4
  return w, b, x, y, dist


def _official_fab(net, x, y, norm, n_iter, target_class):
  """AutoAttack's FAB-T, one target and its first restart (no random start there)."""
  import torch
  fab_pt = _official("fab_pt")
  official = fab_pt.FABAttack_PT(net, norm={"linf": "Linf", "l2": "L2"}[norm], n_iter=n_iter,
                                 targeted=True, device="cpu")
  official.target_class = target_class
  adv = official.attack_single_run(torch.from_numpy(x), torch.from_numpy(y).long(),
                                   use_rand_start=False, is_targeted=True)
  return adv.detach().numpy().reshape(x.shape[0], -1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_equals_the_official_points_and_the_minimal_perturbation(norm):
  import torch
  w, b, x, y, dist = _linear()
  net = torch.nn.Linear(w.shape[0], w.shape[1])
  with torch.no_grad():
    net.weight.copy_(torch.from_numpy(w.T.copy()))
    net.bias.copy_(torch.from_numpy(b))
  f = lambda z: z.reshape(z.shape[0], -1) @ w + b
  theirs = [_official_fab(net, x, y, norm, 20, t) for t in (2, 3, 4)]
  their_dist = np.min([common.norm_of(jnp.asarray(a - x), norm) for a in theirs], 0)
  res = fab_module.fab_run(f, jnp.asarray(x), jnp.asarray(y), key=jax.random.key(0), norm=norm,
                           n_iter=20, n_target_classes=3)
  np.testing.assert_allclose(res.dist, their_dist, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(res.dist, dist[norm], rtol=1e-2)  # 20 steps: within 1%
  assert np.all(np.asarray(res.dist) >= dist[norm] * (1 - 1e-5))
  # Point by point on a nonlinear model: one target (the 2nd most likely class).
  w1, w2 = _mlp_weights(seed=2)
  net = _torch_mlp(w1, w2)
  f = lambda z: jnp.tanh(z @ w1) @ w2
  x = np.random.default_rng(3).uniform(0.2, 0.8, size=(12, 20)).astype(np.float32)
  y = np.array(jnp.argmax(f(jnp.asarray(x)), -1))
  theirs = _official_fab(net, x, y, norm, 20, 2)
  res = fab_module.fab_run(f, jnp.asarray(x), jnp.asarray(y), key=jax.random.key(0), norm=norm,
                           n_iter=20, n_target_classes=1)
  assert np.all(np.isfinite(res.dist))
  np.testing.assert_allclose(res.x_adv, theirs, atol=1e-5)


def test_square_needs_as_many_queries_as_the_official_one_at_the_minimal_perturbation():
  # A 2-class linear model on 6x6 images; the minimal Linf perturbation is 1 / ||v||_1 and
  # reaching 1.25 times it takes the right sign on most pixels, i.e. the 1x1 windows that the
  # standard schedule reaches after query 500. The official code draws window corners in
  # 0 .. h - s - 1 (never touching the last row and column after its start); ours draws
  # them uniformly in 0 .. h - s, so the model gives no weight to that row and column. The
  # random streams differ, so 16 independent runs of each are compared by their query counts.
  import torch
  square_pt = _official("square")
  side, runs, budget = 6, 16, 600
  rng = np.random.default_rng(0)
  v = rng.normal(size=(side, side)).astype(np.float32)
  v[-1, :] = v[:, -1] = 0
  v = v.reshape(-1)
  x = rng.uniform(0.4, 0.6, size=side * side).astype(np.float32)
  x = x + (1.0 - x @ v) / (v @ v) * v   # margin exactly 1
  w = np.stack([np.zeros_like(v), v], 1)
  d_min = 1.0 / np.abs(v).sum()
  xs = np.repeat(x.reshape(1, side, side, 1), runs, 0)
  net = lambda z: z.reshape(z.shape[0], -1) @ torch.from_numpy(w)
  eps = float(d_min * 1.25)
  theirs = []
  for seed in range(runs):
    official = square_pt.SquareAttack(net, norm="Linf", n_queries=budget, eps=eps,
                                      resc_schedule=False, device="cpu")
    x_t = torch.from_numpy(xs[:1].transpose(0, 3, 1, 2).copy())
    official.init_hyperparam(x_t)
    torch.manual_seed(seed)
    n_q, adv = official.attack_single_run(x_t, torch.ones(1).long())
    theirs.append(n_q.item() if net(adv).argmax(1).item() == 0 else np.inf)
  res = attacks.square_run(lambda z: z.reshape(z.shape[0], -1) @ w, jnp.asarray(xs),
                           jnp.asarray(np.ones(runs, np.int32)), key=jax.random.key(0), eps=eps,
                           n_queries=budget)
  ours = np.where(np.asarray(res.robust), np.inf, np.asarray(res.n_queries))
  assert np.isfinite(theirs).sum() >= runs - 2 and np.isfinite(ours).sum() >= runs - 2, (theirs, ours)
  assert abs(np.median(ours) / np.median(theirs) - 1) < 0.15, (np.sort(ours), np.sort(theirs))


def _digits_cnn(steps=80):
  """A 2-conv CNN trained here (full-batch Adam) on scikit-learn's 8x8 digits; returns
  (params, apply) with apply(params, x [B, 8, 8, 1]) -> logits [B, 10]."""
  import optax
  datasets = pytest.importorskip("sklearn.datasets")
  data = datasets.load_digits()
  x = (data.images / 16.0).astype(np.float32)[..., None]
  y = data.target.astype(np.int32)
  rng = np.random.default_rng(0)
  params = {"c1": rng.normal(size=(3, 3, 1, 8)).astype(np.float32) / 3,
            "c2": rng.normal(size=(3, 3, 8, 16)).astype(np.float32) / np.sqrt(72),
            "d": rng.normal(size=(4 * 4 * 16, 10)).astype(np.float32) / 16}
  dn = ("NHWC", "HWIO", "NHWC")

  def apply(p, z):
    h = jax.nn.relu(jax.lax.conv_general_dilated(z, p["c1"], (1, 1), "SAME", dimension_numbers=dn))
    h = jax.nn.relu(jax.lax.conv_general_dilated(h, p["c2"], (2, 2), ((1, 1), (1, 1)),
                                                 dimension_numbers=dn))
    return h.reshape(h.shape[0], -1) @ p["d"]

  opt = optax.adam(1e-2)

  @jax.jit
  def step(p, s):
    g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        apply(p, x[:1500]), y[:1500]).mean())(p)
    updates, s = opt.update(g, s)
    return optax.apply_updates(p, updates), s

  params = jax.tree.map(jnp.asarray, params)
  state = opt.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params, apply, x[1500:], y[1500:]


def _torch_cnn(params):
  import torch

  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)
      self.c2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
      self.d = torch.nn.Linear(256, 10, bias=False)

    def forward(self, z):  # NCHW in; flattened in NHWC order like the JAX model
      h = torch.relu(self.c2(torch.relu(self.c1(z))))
      return self.d(h.permute(0, 2, 3, 1).reshape(z.shape[0], -1))

  net = Net()
  with torch.no_grad():
    net.c1.weight.copy_(torch.from_numpy(np.array(params["c1"]).transpose(3, 2, 0, 1)))
    net.c2.weight.copy_(torch.from_numpy(np.array(params["c2"]).transpose(3, 2, 0, 1)))
    net.d.weight.copy_(torch.from_numpy(np.array(params["d"]).T))
  return net


@pytest.mark.slow  # about 20 s of CPU (training, compiling four attacks, the official run)
def test_standard_ensemble_per_sample_result_equals_the_official_one():
  # AutoAttack's standard version (APGD-CE, APGD-T and FAB-T with 9 targets, Square) with a
  # small budget: 5 iterations, 50 queries, 24 held-out digits at Linf 0.07. The random
  # starts differ, so this holds because each sample is clearly broken or clearly robust
  # at this budget (both: 6 broken by APGD-CE, 18 robust).
  import torch
  aa_pt = _official("autoattack")
  apgd_pt, fab_pt, square_pt = _official("autopgd_base"), _official("fab_pt"), _official("square")
  params, apply, x, _ = _digits_cnn()
  f = lambda z: apply(params, z)
  x = jnp.asarray(x[:24])
  y = np.array(jnp.argmax(f(x), -1))
  net = _torch_cnn(params)
  x_t = torch.from_numpy(np.array(x).transpose(0, 3, 1, 2).copy())
  np.testing.assert_allclose(net(x_t).detach().numpy(), f(x), atol=1e-4)
  eps, n_iter, n_queries = 0.07, 5, 50
  kw = dict(eps=eps, norm="Linf", seed=0, device="cpu")
  official = aa_pt.AutoAttack(net, version="standard", **kw)
  official.verbose = False
  official.apgd = apgd_pt.APGDAttack(net, n_restarts=1, n_iter=n_iter, **kw)
  official.apgd_targeted = apgd_pt.APGDAttack_targeted(net, n_restarts=1, n_iter=n_iter,
                                                       n_target_classes=9, **kw)
  official.fab = fab_pt.FABAttack_PT(net, n_restarts=1, n_iter=n_iter, n_target_classes=9, **kw)
  official.square = square_pt.SquareAttack(net, p_init=0.8, n_queries=n_queries, n_restarts=1,
                                           resc_schedule=False, **kw)
  x_adv, _ = official.run_standard_evaluation(x_t, torch.from_numpy(y).long(), batch_size=24)
  theirs = net(x_adv).argmax(1).numpy() == y
  res = jax.jit(lambda x, y: attacks.autoattack_run(
      f, x, y, key=jax.random.key(0), eps=eps, n_iter=n_iter, n_queries=n_queries,
      n_target_classes=9))(x, jnp.asarray(y))
  assert 0 < theirs.sum() < 24  # informative
  np.testing.assert_array_equal(np.asarray(res.robust), theirs)
