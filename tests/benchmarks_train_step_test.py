"""The PyTorch TRADES/ERA step of benchmarks/train_step.py computes our step: same loss, same
updated weights, from the same weights, batch and attack start (float64 on both sides, so the
sign-gradient attack cannot flip a sign through rounding)."""
import numpy as np
import jax
import jax.numpy as jnp
import pytest

from jax_abstain import models, porting

torch = pytest.importorskip("torch")  # the port extra; the suite collects without it

import torch_reference_models as T  # noqa: E402  (tests/ is on sys.path under pytest)
from benchmarks import train_step  # noqa: E402  (imports torch)

# A ResNet with one block per stage and 4 base channels: BN (train mode in the TRADES loss,
# eval mode in the attack and in ERA), shortcuts, pooling, at a tiny cost.
TINY = dict(num_classes=10, blocks=(1, 1, 1, 1), base_width=4)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["trades", "era"])
def test_torch_step_matches_jax_step(loss):
  with jax.enable_x64(True):
    cfg = train_step.step_config(loss, 0.1, batch_size=6, beta=0.5, attack_steps=3, lr=0.05)
    jax_step, torch_step = train_step.make_pair(
        models.create("resnet18", seed=1, **TINY), T.ResNet(blocks=(1, 1, 1, 1), base_width=4),
        cfg, np.float64)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 8, 8, 3))
    y = rng.integers(0, 10, 6).astype(np.int32)
    key = jax.random.key(2)
    start = train_step.attack_start(cfg, jnp.asarray(x), key)
    assert np.abs(start - x).max() > 1e-4          # a real random start, inside the ball
    assert np.abs(start - x).max() <= 0.1 + 1e-12
    ours = float(jax_step(jnp.asarray(x), jnp.asarray(y), key))
    theirs = torch_step(train_step.nchw(x), torch.from_numpy(y).long(), train_step.nchw(start))
    new_ours = porting.to_torch_state_dict(jax_step.updated_model())
    new_theirs = torch_step.module.state_dict()
  assert ours > 0.5
  np.testing.assert_allclose(ours, theirs, rtol=1e-9)
  initial = porting.to_torch_state_dict(models.create("resnet18", seed=1, **TINY))
  moved = 0
  for name, value in new_theirs.items():
    # Running statistics included: layers.BatchNorm updates running_var with the unbiased
    # batch variance, as PyTorch (issue 16, item 6). The export writes no step counter.
    if "num_batches_tracked" in name:
      continue
    np.testing.assert_allclose(new_ours[name].numpy(), value.numpy(), rtol=1e-7, atol=1e-10,
                               err_msg=name)
    moved += int(not np.allclose(value.numpy(), initial[name].numpy()))
  assert moved > 20   # the step changed (nearly) every tensor, identically on both sides
