"""Certification throughput: `smoothing.certify` vs the same CERTIFY loop in PyTorch (Cohen et
al.'s: one image at a time, batches of noisy copies), on the digits MLP, the MNIST CNN and the
CIFAR ResNet-20. `smoothing.certify` batches images (draw j's noise shared by them)."""
import pathlib
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import timing
from jax_abstain import models, porting, smoothing

SIGMA, N0, BATCH = 0.25, 100, 1000


def torch_mlp(in_features=64, hidden=(64, 64, 64), num_classes=10):
  layers, w = [], in_features
  for h in hidden:
    layers += [torch.nn.Linear(w, h), torch.nn.ReLU()]
    w = h
  return torch.nn.Sequential(torch.nn.Flatten(), *layers, torch.nn.Linear(w, num_classes))


def load_from_jax(net, jax_model):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sd = porting.to_torch_state_dict(jax_model)
  names = [k for k in net.state_dict()]
  src = [f"hidden.{i}.{p}" for i in range(len(jax_model.hidden)) for p in ("weight", "bias")]
  src += ["head.weight", "head.bias"]
  net.load_state_dict({d: sd[s].clone() for d, s in zip(names, src)})
  return net.eval()


def torch_certify(net, x, *, sigma, n0, n, batch_size=BATCH, seed=0):
  """Cohen's CERTIFY counts in PyTorch (same loop shape as smoothing.certify); returns cA, nA."""
  g = torch.Generator().manual_seed(seed)
  out = []
  with torch.no_grad():
    for xi in torch.as_tensor(x):
      def counts(num):
        c = torch.zeros(10, dtype=torch.long)
        left = num
        while left > 0:
          b = min(batch_size, left)
          noisy = xi.unsqueeze(0) + sigma * torch.randn((b, *xi.shape), generator=g)
          if noisy.dim() == 4:  # images: PyTorch's faster CPU convolution layout
            noisy = noisy.contiguous(memory_format=torch.channels_last)
          c += torch.bincount(net(noisy).argmax(1), minlength=10)
          left -= b
        return c
      c_a = int(counts(n0).argmax())
      out.append((c_a, int(counts(n)[c_a])))
  return out


def _throughput(fns, passes, flops_per_pass, peak, repeats):
  """Times the two CERTIFY runs (interleaved); returns table rows and the JAX/PyTorch ratio."""
  res = timing.interleaved(fns, warmup=1, repeats=repeats)
  rows, rates = [], []
  for k, r in res.items():
    rate = passes / r["best"]
    rates.append(rate)
    gf = rate * flops_per_pass / 1e9
    rows.append([k, f"{r['best']:.2f}", f"{r['median']:.2f}", f"{rate:,.0f}", f"{gf:.2f}",
                 f"{100 * gf / peak:.1f}%"])
  return rows, rates[0] / rates[1], rates[0] * flops_per_pass / 1e9 / peak


def mlp_workload(quick: bool, peak: float) -> str:
  npts, n = (3, 20_000) if quick else (10, 100_000)
  repeats = 2 if quick else 3
  model = models.create("mlp", num_classes=10, in_features=64)
  model.eval()
  net = load_from_jax(torch_mlp(), model)
  x = np.random.default_rng(0).uniform(0, 1, (npts, 64)).astype(np.float32)
  xb = jnp.asarray(np.repeat(x[:1], BATCH, 0))
  with torch.no_grad():
    diff = float(np.abs(np.asarray(model(xb)) - net(torch.from_numpy(np.asarray(xb))).numpy()).max())
  flops_per_pass = timing.flops(lambda z: model(z), xb) / BATCH
  key = jax.random.key(0)
  fns = {
      "jax_abstain.smoothing.certify": lambda: smoothing.certify(model, x, key=key, sigma=SIGMA,
                                                                 n0=N0, n=n, batch_size=BATCH),
      "PyTorch loop (no_grad, batches of 1000)": lambda: torch_certify(net, x, sigma=SIGMA,
                                                                       n0=N0, n=n),
  }
  passes = npts * (N0 + n)
  rows, ratio, _ = _throughput(fns, passes, flops_per_pass, peak, repeats)
  text = (f"Model: `mlp` 64-64-64-64-10 (digits input, 64 features), random init, weights copied "
          f"to PyTorch via `porting.to_torch_state_dict` (logit max|diff| {diff:.1e}). "
          f"{npts} inputs, n0={N0}, n={n:,}, sigma={SIGMA}, batch 1000: {passes:,} noisy "
          f"forward passes per run; best of {repeats} interleaved runs. Forward FLOPs per pass "
          f"(XLA cost analysis): {flops_per_pass:,.0f}.\n\n")
  text += timing.table(["implementation", "best s", "median s", "passes/s", "GFLOP/s",
                        "of matmul peak"], rows)
  text += f"\n\nRatio JAX / PyTorch passes/s: **{ratio:.2f}x**.\n"
  timing.target("certify", "CERTIFY passes/s, digits MLP", 1.0, ratio)
  return text


def cohen_resnet20():
  """cifar-resnet20 (Cohen et al.'s CIFAR architecture) and its torch twin on the same weights."""
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
  import torch_reference_models as T  # pylint: disable=import-outside-toplevel
  model = models.create("cifar-resnet20", num_classes=10)
  model.eval()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sd = {k: v.clone() for k, v in porting.to_torch_state_dict(model).items()}
  base = T.CifarResNet(20)
  base.load_state_dict(sd, strict=True)
  mean, std = model.normalize.init_values
  net = torch.nn.Sequential(T.CohenNormalize(mean, std), base).eval()
  return model, net.to(memory_format=torch.channels_last)


def conv_workload(quick: bool, peak: float) -> str:
  """CERTIFY on a CIFAR ResNet-20: the forward pass dominates, so FLOP efficiency shows."""
  npts, n, batch = (1, 500, 250) if quick else (2, 2_000, 500)
  repeats = 2 if quick else 3
  model, net = cohen_resnet20()
  x = np.random.default_rng(0).uniform(0, 1, (npts, 32, 32, 3)).astype(np.float32)
  xb = jnp.asarray(np.repeat(x[:1], batch, 0))
  with torch.no_grad():
    diff = float(np.abs(np.asarray(model(xb)) - net(torch.from_numpy(
        np.asarray(xb).transpose(0, 3, 1, 2).copy())).numpy()).max())
  flops_per_pass = timing.flops(lambda z: model(z), xb) / batch
  key = jax.random.key(0)
  xt = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
  fns = {
      "jax_abstain.smoothing.certify": lambda: smoothing.certify(
          model, x, key=key, sigma=SIGMA, n0=N0, n=n, batch_size=batch),
      "PyTorch loop (no_grad, channels_last)": lambda: torch_certify(
          net, xt, sigma=SIGMA, n0=N0, n=n, batch_size=batch),
  }
  passes = npts * (N0 + n)
  rows, ratio, of_peak = _throughput(fns, passes, flops_per_pass, peak, repeats)
  text = (f"Model: `cifar-resnet20` (Cohen et al.'s CIFAR ResNet, 32x32x3), random init, the "
          f"same weights in the torch reference (logit max|diff| {diff:.1e}). {npts} inputs, "
          f"n0={N0}, n={n:,}, sigma={SIGMA}, batch {batch}; best of {repeats} interleaved runs. "
          f"Forward FLOPs per pass (XLA cost analysis): {flops_per_pass / 1e6:.1f} M.\n\n")
  text += timing.table(["implementation", "best s", "median s", "passes/s", "GFLOP/s",
                        "of matmul peak"], rows)
  text += f"\n\nRatio JAX / PyTorch passes/s: **{ratio:.2f}x**.\n"
  timing.target("certify", "CERTIFY passes/s, cifar-resnet20", 1.0, ratio)
  timing.target("certify", "CERTIFY forward GFLOP/s, cifar-resnet20", 0.5, of_peak, kind="peak")
  return text


def cnn_workload(quick: bool, peak: float) -> str:
  """CERTIFY on the small MNIST CNN of the APGD section against the same loop in PyTorch
  (Cohen et al.'s CERTIFY: batches of 1,000 noisy copies of one image at a time)."""
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
  import torch_reference_models as T  # pylint: disable=import-outside-toplevel
  from benchmarks import apgd as apgd_bench  # pylint: disable=import-outside-toplevel
  from jax_abstain import data  # pylint: disable=import-outside-toplevel
  npts, n = (4, 2_000) if quick else (10, 10_000)
  repeats = 2 if quick else 3
  model, source = apgd_bench.mnist_model()
  net = apgd_bench.to_torch(model, T.SmallCNN()).to(memory_format=torch.channels_last)
  x = data.load("mnist5k", "test")[0][:npts]
  xt = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
  xb = jnp.asarray(np.repeat(x[:1], BATCH, 0))
  flops_per_pass = timing.flops(lambda z: model(z), xb) / BATCH
  key = jax.random.key(0)
  fns = {
      "jax_abstain.smoothing.certify": lambda: smoothing.certify(
          model, x, key=key, sigma=SIGMA, n0=N0, n=n, batch_size=BATCH),
      "PyTorch loop (no_grad, channels_last)": lambda: torch_certify(
          net, xt, sigma=SIGMA, n0=N0, n=n),
  }
  passes = npts * (N0 + n)
  rows, ratio, _ = _throughput(fns, passes, flops_per_pass, peak, repeats)
  text = (f"Model: the small MNIST CNN (conv 1-32, conv 32-64, 3x3, max-pool, 3136-128-10), "
          f"{source}; the same weights in PyTorch. {npts} test digits, n0={N0}, n={n:,}, "
          f"sigma={SIGMA}, batch 1000 (ours: 10 digits x 100 draws per pass, one noise draw "
          f"shared by the digits); best of {repeats} interleaved runs. Forward FLOPs per pass: "
          f"{flops_per_pass / 1e6:.1f} M.\n\n")
  text += timing.table(["implementation", "best s", "median s", "passes/s", "GFLOP/s",
                        "of matmul peak"], rows)
  text += f"\n\nRatio JAX / PyTorch passes/s: **{ratio:.2f}x**.\n"
  timing.target("certify", "CERTIFY passes/s, MNIST CNN", 2.0, ratio)
  return text


def run(quick: bool, peak: float) -> str:
  return ("### Small MLP (digits)\n\n" + mlp_workload(quick, peak)
          + "\n### MNIST CNN\n\n" + cnn_workload(quick, peak)
          + "\n### CIFAR ResNet-20\n\n" + conv_workload(quick, peak))
