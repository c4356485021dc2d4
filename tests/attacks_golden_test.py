"""Golden parity with the official AutoAttack code (pyautoattack, PyTorch) on the same weights.

The official classes are driven directly: DLR and targeted DLR on fixed logits; APGD-CE and
APGD-T iterates from the same start point (``attack_single_run(x_init=...)`` there, the
random start replaced here); FAB-T, which has no randomness in its first restart, point by
point; Square, whose random stream differs, by its query counts on a linear model whose
minimal perturbation is known. Every official iterate is read off the inputs its model is
called with. The tolerances are float32 rounding: a momentum of 0.3 instead of 0.75, or a
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
