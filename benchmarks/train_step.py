"""Adversarial training steps per second: our jitted TRADES/ERA step vs the same step in PyTorch.

    python -m benchmarks.run --only train

`TorchStep` is a PyTorch implementation of exactly the step `training.step.make_train_step`
builds:
the same 10-step sign-gradient PGD inner attack (TRADES: KL from an x + 0.001 N(0, 1) start;
ERA, authors' code variant: CE away from the clean prediction from a uniform start), the same
losses (`losses.trades`, `losses.era` with the code's class-mean KL), the same BN modes and
PyTorch SGD with momentum and weight decay (optax's chain is the same update). Both start from
the same weights (`porting.to_torch_state_dict`), the same batch and the same random attack
starts (`attack_start`), so one step computes the same loss and the same new weights
(tests/benchmarks_train_step_test.py); the section then times both in the same process.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from flax import nnx

from benchmarks import timing
from jax_abstain import models, porting
from jax_abstain.attacks import common
from jax_abstain.training import TrainConfig, step as step_lib


def step_config(loss: str, eps: float, *, batch_size: int, beta: float = 1.0,
                attack_steps: int = 10, lr: float = 0.01) -> TrainConfig:
  """The settings of both steps: the attack runs with BN in eval mode (the TRADES and ERA
  reference code), the loss in the loss's default mode (TRADES train, ERA eval)."""
  return TrainConfig(**dict(
      loss=loss, beta=beta, trades_beta=6.0, eps=float(eps), norm="linf", variant="code",
      epochs=1, batch_size=batch_size, lr=lr, momentum=0.9, weight_decay=5e-4,
      schedule="constant", attack_steps=attack_steps, attack_rel_step=0.25,
      bn_mode_attack="eval", bn_mode_loss=""))


def attack_start(cfg, x: jax.Array, key: jax.Array) -> np.ndarray:
  """The PGD start [B, H, W, C] that the JAX step draws from `key` (pgd's TRADES ``normal``
  start for trades, its ``uniform`` start for ERA), so the torch step can start there too."""
  # step.make_loss_fn's keys: per example fold_in(key, i), then fold_in(., 1) for the attack.
  keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(common.example_keys(key, x.shape[0]), 1)
  if cfg.loss == "trades":
    noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
    return np.asarray(common.project(x + 0.001 * noise, x, cfg.eps, "linf"))
  return np.asarray(common.uniform_start(keys, x, cfg.eps, "linf"))


class JaxStep:
  """`step.make_train_step` with its state threaded through calls (the arrays are donated)."""

  def __init__(self, model: nnx.Module, cfg, dtype=jnp.float32):
    self.model = model
    self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    self.templates = (params, rest)
    self.tx = step_lib.make_optimizer(cfg, 1)
    cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    self.params, self.rest = (jax.tree.map(cast, nnx.to_pure_dict(s)) for s in (params, rest))
    self.opt = self.tx.init(self.params)
    self.step = step_lib.make_train_step(self.graphdef, cfg, self.tx)

  def __call__(self, x, y, key):
    self.params, self.rest, self.opt, metrics = self.step(self.params, self.rest, self.opt, x, y,
                                                          key)
    return metrics["loss"]

  def updated_model(self) -> nnx.Module:
    """The model holding the current parameters and batch statistics."""
    params, rest = (jax.tree.map(lambda v: v, t) for t in self.templates)
    nnx.replace_by_pure_dict(params, jax.device_get(self.params))
    nnx.replace_by_pure_dict(rest, jax.device_get(self.rest))
    nnx.update(self.model, params, rest)
    return self.model


def _kl(p_logits, q_logits, reduction: str):
  """KL(softmax(p) || softmax(q)) per example, summed or averaged over classes."""
  log_p, log_q = F.log_softmax(p_logits, 1), F.log_softmax(q_logits, 1)
  terms = log_p.exp() * (log_p - log_q)
  return terms.sum(1) if reduction == "sum" else terms.mean(1)


def _project(x_adv, x, eps):
  # common.project's arithmetic (clip the offset, add, clip to [0, 1]), for bitwise-equal steps.
  return (x + (x_adv - x).clamp(-eps, eps)).clamp(0.0, 1.0)


def torch_pgd(module, x, target, x_start, *, eps: float, n_iter: int, rel_step: float,
              loss: str):
  """Sign-gradient Linf PGD from `x_start`; loss ``kl`` (target = clean logits) or ``ce``
  (target = labels). Returns the last iterate (NCHW)."""
  x_adv = x_start.detach()
  for _ in range(n_iter):
    x_adv.requires_grad_(True)
    logits = module(x_adv)
    value = (_kl(target, logits, "sum") if loss == "kl"
             else F.cross_entropy(logits, target, reduction="none")).sum()
    grad, = torch.autograd.grad(value, x_adv)
    x_adv = _project(x_adv.detach() + rel_step * eps * grad.sign(), x, eps)
  return x_adv.detach()


@dataclasses.dataclass
class TorchStep:
  """One TRADES or ERA (authors' code variant) step in PyTorch; see the module docstring."""
  module: torch.nn.Module
  cfg: TrainConfig

  def __post_init__(self):
    c = self.cfg
    self.opt = torch.optim.SGD(self.module.parameters(), lr=c.lr, momentum=c.momentum,
                               weight_decay=c.weight_decay)

  def __call__(self, x, y, x_start) -> float:
    c, m = self.cfg, self.module
    m.eval()                                   # the attack: BN in eval mode, no grad to weights
    for p in m.parameters():
      p.requires_grad_(False)
    with torch.no_grad():
      clean = m(x)
    target = clean if c.loss == "trades" else clean.argmax(1)
    x_adv = torch_pgd(m, x, target, x_start, eps=c.eps, n_iter=c.attack_steps,
                      rel_step=c.attack_rel_step, loss="kl" if c.loss == "trades" else "ce")
    for p in m.parameters():
      p.requires_grad_(True)
    m.train() if c.loss == "trades" else m.eval()
    nat, adv = m(x), m(x_adv)
    if c.loss == "trades":
      per_example = F.cross_entropy(nat, y, reduction="none") + c.trades_beta * _kl(nat, adv, "sum")
    else:   # losses.era: beta * TRADES(class-mean KL) + (1 - p_y) * CE(f(x'), top other class)
      trades = F.cross_entropy(nat, y, reduction="none") + c.trades_beta * _kl(nat, adv, "mean")
      other = adv.masked_fill(F.one_hot(nat.argmax(1), adv.shape[1]).bool(), float("-inf"))
      p_y = F.softmax(nat, 1).gather(1, y[:, None])[:, 0]
      per_example = c.beta * trades + (1 - p_y) * F.cross_entropy(adv, other.argmax(1),
                                                                    reduction="none")
    loss = per_example.mean()
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss.item()


def nchw(x) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def make_pair(model: nnx.Module, torch_module: torch.nn.Module, cfg, dtype=np.float32):
  """(JaxStep, TorchStep) on the weights of `model`, both computing in `dtype`."""
  model.train()
  torch_module.load_state_dict({k: v.clone() for k, v in porting.to_torch_state_dict(model).items()},
                               strict=True)
  torch_module.to(torch.float64 if dtype == np.float64 else torch.float32)
  return JaxStep(model, cfg, dtype), TorchStep(torch_module, cfg)


CASES = {  # name: (create options, torch module, input HWC, batch, eps, repeats)
    "small-cnn": (dict(num_classes=10, dropout=0.0), lambda: _reference().SmallCNN(),
                  (28, 28, 1), 128, 0.3, 5),
    "resnet18": (dict(num_classes=10), lambda: _reference().ResNet(), (32, 32, 3), 32, 8 / 255,
                 2),
}


def _reference():
  import pathlib  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
  import torch_reference_models  # pylint: disable=import-outside-toplevel
  return torch_reference_models


def time_case(name: str, loss: str, quick: bool):
  """Steps/s of both implementations on one model and loss (interleaved, warm-up excluded)."""
  options, ctor, shape, batch, eps, repeats = CASES[name]
  if quick:
    batch, repeats = max(batch // 4, 8), 2
  cfg = step_config(loss, eps, batch_size=batch)
  jax_step, torch_step = make_pair(models.create(name, seed=0, **options), ctor(), cfg)
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (batch, *shape)).astype(np.float32)
  y = rng.integers(0, options["num_classes"], batch).astype(np.int32)
  xj, yj, key = jnp.asarray(x), jnp.asarray(y), jax.random.key(0)
  xt, yt, st = nchw(x), torch.from_numpy(y).long(), nchw(attack_start(cfg, xj, key))
  res = timing.interleaved({"jax": lambda: jax_step(xj, yj, key),
                            "torch": lambda: torch_step(xt, yt, st)}, warmup=1, repeats=repeats)
  return batch, eps, repeats, res


def run(quick: bool, peak: float) -> str:  # pylint: disable=unused-argument
  """The section text: steps/s of ours and PyTorch per model and loss, and their ratio."""
  rows = []
  for name in CASES:
    for loss in ("trades", "era"):
      batch, eps, repeats, res = time_case(name, loss, quick)
      j, t = (1.0 / res[k]["best"] for k in ("jax", "torch"))
      rows.append([name, loss.upper(), batch, f"{eps:.4g}", repeats, f"{j:.3f}", f"{t:.3f}",
                   f"{j * batch:,.1f}", f"{t * batch:,.1f}", f"**{j / t:.2f}x**",
                   f"{res['jax']['median'] / res['torch']['median']:.2f}"])
      timing.target("train", f"{loss.upper()} training step, {name}", 1.0, j / t)
      print(rows[-1], flush=True)
  text = ("One adversarial training step (10-step Linf PGD inner attack, step 0.25 eps; forward "
          "and backward of the loss; SGD momentum 0.9, weight decay 5e-4) of "
          "`training.step.make_train_step` (jitted) against `benchmarks/train_step.TorchStep`, the same "
          "step in eager PyTorch, on the same freshly initialised weights (exported with "
          "`porting.to_torch_state_dict`), the same batch (uniform random inputs) and the same "
          "attack starts. TRADES: KL attack from x + 0.001 N(0, 1), BN in eval mode for the "
          "attack and train mode for the loss (the TRADES code); ERA (authors' code variant): one "
          "CE attack away from the clean prediction from a uniform start, BN in eval mode "
          "throughout, beta 1. tests/benchmarks_train_step_test.py checks that one step of each "
          "computes the same loss and weights (float64, rtol 1e-9 / 1e-7). The small CNN runs "
          "without dropout because the torch reference module has none. Timed in the same "
          f"process, alternating the two, best and median of the repeats after one warm-up step; "
          f"torch threads = {torch.get_num_threads()}. The machine is shared: absolute steps/s "
          "move with the load, the ratio less so.\n\n")
  text += timing.table(["model", "loss", "batch", "eps", "repeats", "steps/s ours",
                        "steps/s torch", "images/s ours", "images/s torch",
                        "ours / torch (best)", "ours / torch time (median)"], rows)
  return text + "\n"
