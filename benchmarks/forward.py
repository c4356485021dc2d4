"""Forward throughput of ported WRN-28-10 / ResNet-18: JAX vs PyTorch eager on the same weights."""
import pathlib
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from benchmarks import timing
from jax_abstain import models, porting

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
import torch_reference_models as T  # pylint: disable=wrong-import-position

CASES = {  # name: (torch constructor, batch, repeats full, repeats quick)
    "resnet18": (lambda: T.ResNet(), 64, 5, 2),
    "wrn-28-10": (lambda: T.WideResNet(28, 10, 10), 8, 3, 1),
}


def one(name, quick, peak):
  ctor, batch, rep_full, rep_quick = CASES[name]
  repeats = rep_quick if quick else rep_full
  model = models.create(name)
  model.eval()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sd = {k: v.clone() for k, v in porting.to_torch_state_dict(model).items()}
  net = ctor()
  net.load_state_dict(sd)
  net.eval()
  net_cl = ctor()
  net_cl.load_state_dict(sd)
  net_cl = net_cl.eval().to(memory_format=torch.channels_last)
  x = np.random.default_rng(0).uniform(0, 1, (batch, 32, 32, 3)).astype(np.float32)
  xj = jnp.asarray(x)
  xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  xt_cl = xt.contiguous(memory_format=torch.channels_last)
  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda s, z: nnx.merge(graphdef, s)(z))
  with torch.no_grad():
    diff = float(np.abs(np.asarray(fwd(state, xj)) - net(xt).numpy()).max())
  fl = timing.flops(lambda z: fwd(state, z), xj) / batch

  def tfwd(n, z):
    def f():
      with torch.no_grad():
        return n(z)
    return f
  fns = {"JAX (jit)": lambda: fwd(state, xj), "PyTorch eager NCHW": tfwd(net, xt),
         "PyTorch eager channels_last": tfwd(net_cl, xt_cl)}
  res = timing.interleaved(fns, warmup=1, repeats=repeats)
  rows, rates = [], {}
  for k, r in res.items():
    ips = batch / r["best"]
    rates[k] = ips
    gf = ips * fl / 1e9
    rows.append([name, k, batch, f"{r['best'] * 1e3:.0f}", f"{r['median'] * 1e3:.0f}",
                 f"{ips:,.1f}", f"{gf:.1f}", f"{100 * gf / peak:.0f}%"])
  ratio_nchw = rates["JAX (jit)"] / rates["PyTorch eager NCHW"]
  ratio_cl = rates["JAX (jit)"] / rates["PyTorch eager channels_last"]
  timing.target("forward", f"forward images/s, {name}", 1.0, ratio_cl)
  timing.target("forward", f"forward GFLOP/s, {name}", 0.6,
                rates["JAX (jit)"] * fl / 1e9 / peak, kind="peak")
  note = (f"{name}: {fl / 1e9:.2f} GFLOP per image (XLA cost analysis), logit max|diff| JAX vs "
          f"torch {diff:.1e}, best of {repeats} interleaved; JAX/PyTorch images/s ratio "
          f"**{ratio_nchw:.2f}x** vs NCHW, **{ratio_cl:.2f}x** vs channels_last.")
  return rows, note


def run(quick: bool, peak: float) -> str:
  all_rows, notes = [], []
  for name in CASES:
    rows, note = one(name, quick, peak)
    all_rows += rows
    notes.append(note)
  text = ("Random-init registry models (`jax_abstain.models.create`), weights exported with "
          "`porting.to_torch_state_dict` into the torch reference modules of "
          "`tests/torch_reference_models.py`; inputs 32x32x3 uniform in [0, 1], eval mode, "
          f"torch threads = {torch.get_num_threads()}.\n\n")
  text += timing.table(["model", "implementation", "batch", "best ms", "median ms", "images/s",
                        "GFLOP/s", "of matmul peak"], all_rows)
  return text + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
