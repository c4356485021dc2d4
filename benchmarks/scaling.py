"""How cost grows with batch size, attack steps, noise samples and model width (JAX only).

Four sweeps, each on a fixed random-init registry model, timed with `timing.measure` (best of
repeats after a compiling warm-up):
  1. APGD-CE (10 steps) on the trained issue-21 MNIST CNN, batch 16..256 test digits: images/s.
  2. APGD-CE on the same CNN, batch 64, 5..40 steps: seconds per batch.
  3. Randomized-smoothing sampling (`smoothing.sample`) with the cifar-resnet20 base model:
     noise samples per input 250..4000 (batch 250): noisy forward passes/s.
  4. Forward + input gradient of WRN-16-k, k = 1, 2, 4, 8 (batch 16): GFLOP/s.
Writes benchmarks/scaling.png (four panels) and returns the markdown tables.
"""
import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from flax import nnx

from benchmarks import apgd as apgd_bench
from benchmarks import timing
from jax_abstain import attacks, models, smoothing
from jax_abstain.models import wide_resnet

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

PNG = pathlib.Path(__file__).resolve().parent / "scaling.png"


def _model(name, **kw):
  net = models.create(name, **kw)
  net.eval()
  return net


def _images(n, shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32))


def _apgd_seconds(net, x, n_iter, repeats):
  y = jnp.argmax(net(x), -1)
  run = attacks.jit_attack(net, attacks.apgd, eps=0.1, n_iter=n_iter)
  return timing.measure(lambda: run(x, y, jax.random.key(0)), repeats=repeats)["best"]


def _digits_model():
  """The trained digits CNN and real test digits: points stay robust, every step runs (a
  random-init CNN loses all points within a few steps and the attack loop stops early)."""
  params, _, x, _ = apgd_bench.trained_cnn()   # the issue-21 CNN, as an NNX module
  return apgd_bench.NnxCNN(params), jnp.asarray(x)


def batch_sweep(quick):
  net, digits = _digits_model()
  sizes = (16, 64, 128) if quick else (16, 32, 64, 128, 256)
  return [(b, b / _apgd_seconds(net, digits[:b], 10, 2)) for b in sizes]


def steps_sweep(quick):
  net, digits = _digits_model()
  x = digits[:64]
  steps = (5, 10, 20) if quick else (5, 10, 20, 40)
  return [(s, _apgd_seconds(net, x, s, 2)) for s in steps]


def noise_sweep(quick):
  net = _model("cifar-resnet20", num_classes=10)
  x = np.asarray(_images(1, (32, 32, 3)))
  nums = (250, 1000) if quick else (250, 500, 1000, 2000, 4000)
  out = []
  for num in nums:
    fn = lambda num=num: smoothing.sample(net, x, num, key=jax.random.key(0), sigma=0.25,
                                          batch_size=250)
    out.append((num, num / timing.measure(fn, repeats=2)["best"]))
  return out


def width_sweep(quick):
  widths = (1, 2, 4) if quick else (1, 2, 4, 8)
  x = _images(16, (32, 32, 3))
  out = []
  for k in widths:
    net = _wrn16(k)
    graphdef, state = nnx.split(net)

    def loss(z, state=state, graphdef=graphdef):
      return jnp.sum(jax.nn.log_softmax(nnx.merge(graphdef, state)(z))[:, 0])

    grad = jax.jit(jax.grad(loss))
    flops = timing.flops(jax.grad(loss), x)
    t = timing.measure(lambda grad=grad: grad(x), repeats=3)["best"]
    out.append((k, flops / t / 1e9, len(x) / t))
  return out


def _wrn16(k):
  """WRN-16-k (the registry has k = 2, 4, 8; k = 1 is built from the same class)."""
  net = wide_resnet.WideResNet(depth=16, widen_factor=k, num_classes=10, rngs=nnx.Rngs(0))
  net.eval()
  return net


def _plot(batch, steps, noise, width):
  fig, ax = plt.subplots(2, 2, figsize=(9, 7))
  panels = [
      (ax[0, 0], batch, "batch size", "images/s", "APGD-CE 10 steps, small CNN"),
      (ax[0, 1], steps, "attack steps", "s per batch of 64", "APGD-CE, small CNN"),
      (ax[1, 0], noise, "noise samples per input", "noisy passes/s", "smoothing.sample, ResNet-20"),
      (ax[1, 1], [(k, g) for k, g, _ in width], "WRN-16 widen factor k", "GFLOP/s",
       "forward + input gradient, batch 16"),
  ]
  for a, pts, xl, yl, title in panels:
    xs, ys = zip(*pts)
    a.plot(xs, ys, "o-")
    a.set_xscale("log", base=2)
    a.set(xlabel=xl, ylabel=yl, title=title)
    a.grid(alpha=0.3)
  fig.tight_layout()
  tmp = PNG.with_suffix(".tmp.png")
  fig.savefig(tmp, dpi=90)
  plt.close(fig)
  tmp.replace(PNG)


def run(quick: bool, peak: float) -> str:
  batch, steps, noise, width = batch_sweep(quick), steps_sweep(quick), noise_sweep(quick), \
      width_sweep(quick)
  _plot(batch, steps, noise, width)
  per_step = [(s, t) for s, t in steps]
  slope = np.polyfit([s for s, _ in per_step], [t for _, t in per_step], 1)
  text = (f"![scaling](benchmarks/{PNG.name})\n\n"
          + timing.table(["batch", "APGD-CE 10 steps images/s"],
                         [(b, f"{v:,.1f}") for b, v in batch]) + "\n\n"
          + timing.table(["steps", "s per batch of 64"], [(s, f"{t:.2f}") for s, t in steps])
          + f"\n\nLinear fit: {slope[0]:.3f} s per step + {slope[1]:.2f} s fixed (initial "
          "gradient, checkpoints, final evaluation).\n\n"
          + timing.table(["noise samples", "noisy passes/s"], [(n, f"{v:,.0f}") for n, v in noise])
          + "\n\n"
          + timing.table(["WRN-16-k", "GFLOP/s", "of matmul peak", "images/s"],
                         [(k, f"{g:.1f}", f"{100 * g / peak:.0f}%", f"{ips:.1f}")
                          for k, g, ips in width]))
  return text + "\n"
