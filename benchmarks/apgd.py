"""APGD-CE and AutoAttack (standard) against the official AutoAttack code (pyautoattack).

Same process, same weights, same inputs, timed one after the other. Models: the issue-21 MNIST
CNN written as a user would (plain JAX functions in NCHW and NHWC, Flax Linen and NNX modules)
and the zoo's ResNet-18 (RobustBench's architecture, random init).
"""
import functools
import logging
import pathlib
import re
import sys
import time
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx
from jax import lax

from benchmarks import timing
from jax_abstain import attacks, data, models, porting
from jax_abstain.models import fast_conv, layers

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import torch_reference_models as T  # pylint: disable=wrong-import-position

EPS_MNIST = 0.1
NHWC = ("NHWC", "HWIO", "NHWC")


class TorchCNN(torch.nn.Module):
  """The issue's CNN: conv 1->32, conv 32->64 (3x3, pad 1, ReLU, 2x2 max-pool), 3136->128->10."""

  def __init__(self):
    super().__init__()
    self.c1, self.c2 = torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.Conv2d(32, 64, 3, padding=1)
    self.f1, self.f2 = torch.nn.Linear(3136, 128), torch.nn.Linear(128, 10)

  def forward(self, x):
    h = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
    h = torch.nn.functional.max_pool2d(torch.relu(self.c2(h)), 2)
    return self.f2(torch.relu(self.f1(h.flatten(1))))


def _pool(h, win):
  return lax.reduce_window(h, -jnp.inf, lax.max, win, win, "VALID")


def nhwc_fn(p):
  """The CNN as a plain NHWC function of x [B,28,28,1]; p holds HWIO kernels."""
  def f(x):
    h = x
    for k, b in (("c1", "b1"), ("c2", "b2")):
      h = lax.conv_general_dilated(h, p[k], (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)
      h = _pool(jax.nn.relu(h + p[b]), (1, 2, 2, 1))
    return jax.nn.relu(h.reshape(h.shape[0], -1) @ p["f1"] + p["g1"]) @ p["f2"] + p["g2"]
  return f


def nchw_fn(p):
  """The same network as a user porting PyTorch code writes it: NCHW/OIHW, NCHW flatten."""
  k = {n: jnp.transpose(p[n], (3, 2, 0, 1)) for n in ("c1", "c2")}
  f1 = p["f1"].reshape(7, 7, 64, 128).transpose(2, 0, 1, 3).reshape(3136, 128)
  def f(x):
    h = jnp.transpose(x, (0, 3, 1, 2))
    for n, b in (("c1", "b1"), ("c2", "b2")):
      h = lax.conv_general_dilated(h, k[n], (1, 1), ((1, 1), (1, 1)),
                                   dimension_numbers=("NCHW", "OIHW", "NCHW"))
      h = _pool(jax.nn.relu(h + p[b][:, None, None]), (1, 1, 2, 2))
    return jax.nn.relu(h.reshape(h.shape[0], -1) @ f1 + p["g1"]) @ p["f2"] + p["g2"]
  return f


class LinenCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    for c in (32, 64):
      x = nn.max_pool(nn.relu(nn.Conv(c, (3, 3), padding=1)(x)), (2, 2), (2, 2))
    h = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
    return nn.Dense(10)(h)


def linen_fn(p):
  params = {"Conv_0": {"kernel": p["c1"], "bias": p["b1"]}, "Conv_1": {"kernel": p["c2"], "bias": p["b2"]},
            "Dense_0": {"kernel": p["f1"], "bias": p["g1"]}, "Dense_1": {"kernel": p["f2"], "bias": p["g2"]}}
  return lambda x: LinenCNN().apply({"params": params}, x)


class NnxCNN(nnx.Module):
  """The CNN as an NNX module: `nnx.Conv` layers, or with ``zoo=True`` the zoo's own layers
  (`models.layers.conv2d`, whose convolutions carry `models/fast_conv.py`'s gradient, and
  `layers.max_pool`), the model-zoo path the user-function rows are compared with."""

  def __init__(self, p, zoo=False):
    r = nnx.Rngs(0)
    if zoo:
      self.c1 = layers.conv2d(1, 32, 3, padding=1, bias=True, rngs=r)
      self.c2 = layers.conv2d(32, 64, 3, padding=1, bias=True, rngs=r)
    else:
      self.c1 = nnx.Conv(1, 32, (3, 3), padding=1, rngs=r)
      self.c2 = nnx.Conv(32, 64, (3, 3), padding=1, rngs=r)
    self.pool = (lambda h: layers.max_pool(h, 2)) if zoo else (
        lambda h: nnx.max_pool(h, (2, 2), (2, 2)))
    self.f1, self.f2 = nnx.Linear(3136, 128, rngs=r), nnx.Linear(128, 10, rngs=r)
    for layer, (w, b) in ((self.c1, ("c1", "b1")), (self.c2, ("c2", "b2")), (self.f1, ("f1", "g1")),
                          (self.f2, ("f2", "g2"))):
      layer.kernel.value, layer.bias.value = p[w], p[b]

  def __call__(self, x):
    for c in (self.c1, self.c2):
      x = self.pool(nnx.relu(c(x)))
    return self.f2(nnx.relu(self.f1(x.reshape(x.shape[0], -1))))


@functools.lru_cache(maxsize=1)
def trained_cnn():
  """(NHWC params, torch module, test x, test y): 1 epoch of Adam on mnist5k's 4,000 digits."""
  x, y = data.load("mnist5k", "train")
  rng = np.random.default_rng(0)
  def he(*s):
    return jnp.asarray(rng.standard_normal(s).astype(np.float32) * np.sqrt(2 / np.prod(s[:-1])))
  p = dict(c1=he(3, 3, 1, 32), b1=jnp.zeros(32), c2=he(3, 3, 32, 64), b2=jnp.zeros(64),
           f1=he(3136, 128), g1=jnp.zeros(128), f2=he(128, 10), g2=jnp.zeros(10))
  tx = optax.adam(1e-3)

  @jax.jit
  def step(p, s, xb, yb):
    loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(nhwc_fn(q)(xb), yb).mean()
    g = jax.grad(loss)(p)
    u, s = tx.update(g, s)
    return optax.apply_updates(p, u), s
  s = tx.init(p)
  for epoch in range(1):
    order = np.random.default_rng(epoch).permutation(len(x))
    for i in range(0, len(x), 100):
      p, s = step(p, s, jnp.asarray(x[order[i:i + 100]]), jnp.asarray(y[order[i:i + 100]]))
  tm = TorchCNN().eval()
  with torch.no_grad():
    for n, w, b in (("c1", "c1", "b1"), ("c2", "c2", "b2")):
      getattr(tm, n).weight.copy_(torch.from_numpy(np.asarray(p[w]).transpose(3, 2, 0, 1).copy()))
      getattr(tm, n).bias.copy_(torch.from_numpy(np.asarray(p[b])))
    f1 = np.asarray(p["f1"]).reshape(7, 7, 64, 128).transpose(2, 0, 1, 3).reshape(3136, 128)
    tm.f1.weight.copy_(torch.from_numpy(f1.T.copy()))
    tm.f1.bias.copy_(torch.from_numpy(np.asarray(p["g1"])))
    tm.f2.weight.copy_(torch.from_numpy(np.asarray(p["f2"]).T.copy()))
    tm.f2.bias.copy_(torch.from_numpy(np.asarray(p["g2"])))
  xt, yt = data.load("mnist5k", "test")
  return p, tm, xt, yt


def resnet18():
  """(zoo ResNet-18 in eval mode, the torch reference with the same weights)."""
  model = models.create("resnet18", num_classes=10)
  model.eval()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sd = {k: v.clone() for k, v in porting.to_torch_state_dict(model).items()}
  module = T.ResNet()
  module.load_state_dict(sd, strict=True)
  return model, module.eval()


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _timed(fn):
  t = time.perf_counter()
  out = timing.block(fn())
  return out, time.perf_counter() - t


def official_apgd(module, xt, yt, eps, n_iter):
  from pyautoattack.autopgd_base import APGDAttack  # pylint: disable=import-outside-toplevel
  atk = APGDAttack(module, n_iter=n_iter, norm="Linf", n_restarts=1, eps=eps, seed=0, loss="ce",
                   device="cpu")
  x_adv, secs = _timed(lambda: atk.perturb(xt, yt))
  with torch.no_grad():
    rob = (module(x_adv).argmax(1) == yt).numpy()
  return rob, secs


class _AttackTimes(logging.Handler):
  """Collects AutoAttack's "robust accuracy after X: ... (total time T s)" log lines."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.total = {}

  def emit(self, record):
    m = re.match(r"robust accuracy after ([\w-]+): .*total time ([\d.]+) s", record.getMessage())
    if m:
      self.total[m.group(1).lower()] = float(m.group(2))


def official_aa(module, xt, yt, eps, times=None):
  """(robust [N], s) of the official standard ensemble; `times` (a dict) receives the
  seconds each attack took, from AutoAttack's own log."""
  from pyautoattack import AutoAttack  # pylint: disable=import-outside-toplevel
  atk = AutoAttack(module, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
  handler, logger = _AttackTimes(), logging.getLogger("auto-attack")
  logger.addHandler(handler)
  level = logger.level
  logger.setLevel(logging.DEBUG)
  try:
    (_, y_adv), secs = _timed(lambda: atk.run_standard_evaluation(xt, yt, batch_size=len(yt)))
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  if times is not None:
    last = 0.0
    for name, total in handler.total.items():
      times[name], last = total - last, total
  rob = (y_adv == yt).numpy()   # the predictions at its adversarial points
  return rob, secs


def ours_apgd(fn, x, y, eps, n_iter):
  """(robust [N], first-call s (compiles), second-call s) of jitted APGD-CE."""
  run = jax.jit(lambda x, y, k: attacks.apgd(fn, x, y, key=k, eps=eps, n_iter=n_iter))
  key = jax.random.key(0)
  _, first = _timed(lambda: run(x, y, key))
  x_adv, second = _timed(lambda: run(x, y, key))
  return np.asarray(jnp.argmax(fn(x_adv), -1) == y), first, second


def ours_aa(fn, x, y, eps, times=None):
  """(robust [N], first-call s, second-call s) of our standard ensemble; `times` (a dict)
  receives the seconds each attack took in the second call (its `Progress` events)."""
  events = []
  kw = dict(key=jax.random.key(0), eps=eps, run_checks=False, progress=events.append)
  _, first = _timed(lambda: attacks.autoattack_run(fn, x, y, **kw).robust)
  events.clear()
  rob, second = _timed(lambda: attacks.autoattack_run(fn, x, y, **kw).robust)
  if times is not None:
    last = 0.0
    for e in events:
      if e.attack != "clean":
        times[e.attack] = times.get(e.attack, 0.0) + e.seconds - last
      last = e.seconds
  return np.asarray(rob), first, second


def step_flops(fn, x, y) -> float:
  """XLA's FLOP count of one APGD-CE gradient step (CE value and input gradient) per image."""
  loss = lambda z: optax.softmax_cross_entropy_with_integer_labels(fn(z), y).sum()
  return timing.flops(jax.value_and_grad(loss), x) / x.shape[0]


def breakdown(ours: dict, official: dict) -> list:
  """Rows attack | official s | ours s | ratio of the two ensembles' per-attack times."""
  return [[name, f"{official.get(name, float('nan')):.1f}", f"{ours.get(name, float('nan')):.1f}",
           f"{official.get(name, float('nan')) / ours.get(name, float('nan')):.2f}x"]
          for name in ("apgd-ce", "apgd-t", "fab-t", "square")]



BREAKDOWNS = {}   # model -> per-attack rows of the AutoAttack ensembles (`breakdown`)
PEAK = [float("nan")]


def _row(attack, model, n, ours, official, target=None, goal=None, work=None):
  """A table row from ours = (robust, first s, second s) and official = (robust, s); records
  the target (speed ratio with compilation excluded) when named. `work`: the attack's FLOPs
  (gradient steps x `step_flops`), shown as GFLOP/s and fraction of the matmul peak."""
  (rob, first, second), (rob_off, off_s) = ours, official
  if target:
    timing.target("apgd", target, goal, off_s / second)
  rate = "-" if work is None else " / ".join(
      f"{work / s / 1e9:.0f} ({100 * work / s / 1e9 / PEAK[0]:.0f}%)" for s in (off_s, second))
  row = [attack, model, n, f"{100 * rob.mean():.1f}", f"{100 * rob_off.mean():.1f}",
          f"{100 * (rob.mean() - rob_off.mean()):+.1f}", f"{off_s:.1f}", f"{first:.1f}",
          f"{second:.1f}", f"**{off_s / first:.2f}x**", f"**{off_s / second:.2f}x**", rate]
  print(row, flush=True)
  return row


def _inputs(x, y):
  return jnp.asarray(x), jnp.asarray(y), nchw(x), torch.from_numpy(np.asarray(y)).long()


def mnist_rows(quick):
  """APGD-CE on every way of writing the CNN, AutoAttack on the NCHW function."""
  p, tm, x, y = trained_cnn()
  n_apgd, n_aa = (100, 50) if quick else (500, 100)
  xj, yj, xt, yt = _inputs(x[:n_apgd], y[:n_apgd])
  fns = {"plain JAX function, NCHW `lax.conv_general_dilated`": nchw_fn(p),
         "plain JAX function, NHWC": nhwc_fn(p), "Flax Linen module (`nn.Conv`)": linen_fn(p),
         "Flax NNX module (`nnx.Conv`)": NnxCNN(p),
         "zoo layers (`models.layers.conv2d`, `layers.max_pool`)": NnxCNN(p, zoo=True)}
  official = official_apgd(tm, xt, yt, EPS_MNIST, 40)
  work = n_apgd * 40 * step_flops(nhwc_fn(p), xj, yj)
  rows = []
  for i, (name, fn) in enumerate(fns.items()):
    named = dict(target="APGD-CE, MNIST CNN as a plain NCHW function", goal=2.0) if i == 0 else {}
    rows.append(_row("APGD-CE, 40 it", name, n_apgd, ours_apgd(fn, xj, yj, EPS_MNIST, 40),
                     official, work=work, **named))
  times_off, times_ours = {}, {}
  official = official_aa(tm, xt[:n_aa], yt[:n_aa], EPS_MNIST, times_off)
  fn = fns["plain JAX function, NCHW `lax.conv_general_dilated`"]
  rows.append(_row("AutoAttack standard", "plain JAX function, NCHW", n_aa,
                   ours_aa(fn, xj[:n_aa], yj[:n_aa], EPS_MNIST, times_ours), official,
                   target="AutoAttack standard, MNIST CNN as a plain NCHW function", goal=5.0))
  BREAKDOWNS[f"MNIST CNN (NCHW function), {n_aa} digits"] = breakdown(times_ours, times_off)
  return rows


def resnet_rows(quick, eps=8 / 255):
  """ResNet-18 (random init) on uniform inputs, labels = its clean prediction; eps 8/255
  leaves about a quarter of the points to the attacks after APGD-CE (1/255 breaks none)."""
  model, module = resnet18()
  n, n_aa = (8, 4) if quick else (32, 8)
  x = np.random.default_rng(0).uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)
  y = np.asarray(jnp.argmax(model(jnp.asarray(x)), -1))
  xj, yj, xt, yt = _inputs(x, y)
  official = official_apgd(module, xt, yt, eps, 20)
  work = n * 20 * step_flops(model, xj, yj)
  rows = [_row("APGD-CE, 20 it", "zoo ResNet-18", n, ours_apgd(model, xj, yj, eps, 20),
               official, target="APGD-CE, ResNet-18", goal=2.0, work=work)]
  # The zoo's per-layer fast convolutions off: only the attack's whole-model rewrite is left.
  plain = fast_conv.use_fast_convs(resnet18()[0], enabled=False)
  rows.append(_row("APGD-CE, 20 it", "ResNet-18, plain `nnx.Conv` layers", n,
                   ours_apgd(plain, xj, yj, eps, 20), official, work=work))
  times_off, times_ours = {}, {}
  rows.append(_row("AutoAttack standard", "zoo ResNet-18", n_aa,
                   ours_aa(model, xj[:n_aa], yj[:n_aa], eps, times_ours),
                   official_aa(module, xt[:n_aa], yt[:n_aa], eps, times_off),
                   target="AutoAttack standard, ResNet-18", goal=2.0))
  BREAKDOWNS[f"ResNet-18, {n_aa} images"] = breakdown(times_ours, times_off)
  return rows


def run(quick: bool, peak: float) -> str:
  PEAK[0] = peak
  rows = mnist_rows(quick) + resnet_rows(quick)
  text = timing.table(["attack", "our model", "n", "robust acc. ours %", "official %",
                       "difference (points)", "official s", "ours s (incl. compile)",
                       "ours s (compiled)", "speed-up incl. compile", "speed-up compiled",
                       "GFLOP/s official / ours (of matmul peak)"], rows)
  for model, parts in BREAKDOWNS.items():
    text += (f"\n\nAutoAttack standard, per attack, {model} (official: its log's times; ours: "
             "the second call's `Progress` events):\n\n" + timing.table(
                 ["attack", "official s", "ours s", "speed-up"], parts))
  intro = (
      "Same process, same weights, same inputs, official code first: `pyautoattack` "
      "(`APGDAttack`, `AutoAttack(version='standard')`, seed 0, torch threads = "
      f"{torch.get_num_threads()}) on the PyTorch module, ours on the JAX model. MNIST CNN: "
      "the issue-21 network (conv 1->32, conv 32->64, 3x3 pad 1 + ReLU + 2x2 max-pool, "
      "3136->128->10) trained here for 1 epoch of Adam on mnist5k's 4,000 training digits, "
      "attacked on the first mnist5k test digits with their labels at Linf eps 0.1, written "
      "four ways a user would write it and once with the zoo's layers; ResNet-18: the zoo's "
      "port of RobustBench's architecture, random init, uniform inputs, labels = its clean "
      "prediction, eps 8/255 (a second row with the zoo's per-layer fast convolutions "
      "switched off, `fast_conv.use_fast_convs(model, False)`). Ours runs with "
      "the attacks' fast gradients (`models/fast_conv.py`, `fast_input_grads`, applied to any "
      "model on CPU) and AutoAttack's survivor buckets; `ours s (incl. compile)` is the first "
      "call, `ours s (compiled)` a second call; speed-up = official s / ours s. Targets use "
      "the compiled column. Robust accuracy: ours and the official code's at their own "
      "adversarial points (different random starts, so a few samples may differ).\n\n")
  return intro + text + "\n"
