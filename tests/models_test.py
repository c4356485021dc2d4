"""Models: full-size topologies (parameter counts, no forward), registry metadata, train/eval."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_abstain import models
from jax_abstain.errors import UserError
from jax_abstain.models import layers


def _param_count(name, **kw):
  abstract = nnx.eval_shape(lambda: models.create(name, **kw))
  return sum(math.prod(v.get_value().shape) for _, v in nnx.iter_graph(abstract)
             if isinstance(v, nnx.Param))


# Published sizes (torchvision ResNet-50: 25,557,032; RobustBench WRN-28-10: 36.5M).
KNOWN = {"wrn-28-10": 36_479_194, "wrn-34-10": 46_160_474, "resnet18": 11_173_962,
         "resnet50-imagenet": 25_557_032, "cifar-resnet110": 1_730_714}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_full_size_parameter_counts(name):
  assert _param_count(name) == KNOWN[name]


def test_full_size_counts_match_torch_references():
  torch = pytest.importorskip("torch")
  import torch_reference_models as T  # pylint: disable=import-outside-toplevel
  refs = {
      "Carmon2019Unlabeled": lambda: T.WideResNet(28, 10, 10, sub_block1=True),
      "Zhang2019Theoretically": lambda: T.WideResNet(34, 10, 10, sub_block1=True),
      "Ding2020MMA": lambda: T.WideResNet(28, 4, 10),
      "Gowal2020Uncovering_28_10_extra": lambda: T.DMWideResNet(10, 28, 10),
      "cifar100/Linf/Rebuffi2021Fixing_28_10_cutmix_ddpm": lambda: T.DMWideResNet(100, 28, 10),
      "Sehwag2021Proxy_R18": lambda: T.ResNet(),
      "preact-resnet18": lambda: T.PreActResNet(),
      "resnet50": lambda: T.ResNet((3, 4, 6, 3), bottleneck=True),
      "small-cnn": lambda: T.SmallCNN(),
  }
  for name, factory in refs.items():
    with torch.device("meta"):
      expected = sum(p.numel() for p in factory().parameters())
    assert _param_count(name) == expected, name


def test_registry_names_and_metadata():
  names = models.names()
  for n in ("Carmon2019Unlabeled", "Wang2020Improving", "Zhang2019Theoretically",
            "Gowal2020Uncovering_28_10_extra", "cifar100/Linf/Rebuffi2021Fixing_28_10_cutmix_ddpm",
            "Sehwag2021Proxy_R18", "Ding2020MMA", "wrn-28-10", "cifar-resnet110", "small-cnn",
            "preact-resnet18", "resnet50-imagenet", "mlp"):
    assert n in names
  meta = models.get("cifar100/Linf/Rebuffi2021Fixing_28_10_cutmix_ddpm").metadata
  assert meta["dataset"] == "cifar100" and meta["threat_model"] == "Linf"
  assert models.get("cifar100/Linf/Rebuffi2021Fixing_28_10_cutmix_ddpm").defaults["num_classes"] == 100
  assert models.get("Carmon2019Unlabeled").defaults["sub_block1"] is True
  assert models.get("Ding2020MMA").defaults["normalization"] == "per_image"
  with pytest.raises(UserError, match=r"unknown model .Nope2020.; .*port --list. lists the \d+ known"):
    models.get("Nope2020")


def test_mlp_still_builds():
  net = models.create("mlp", num_classes=3, in_features=2)
  assert net(jnp.ones((5, 2))).shape == (5, 3)


def test_normalization_is_inside_the_model():
  net = models.create("Gowal2020Uncovering_28_10_extra", depth=10, width=1)
  np.testing.assert_allclose(net.normalize.mean.get_value(), (0.4914, 0.4822, 0.4465))
  assert models.create("cifar-resnet20").normalize.describe()["std"] == pytest.approx(
      (0.2023, 0.1994, 0.2010))
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  per_image = models.create("Ding2020MMA", depth=10, widen_factor=1).normalize(x)
  np.testing.assert_allclose(per_image.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)


def test_train_eval_switch_controls_batch_norm():
  net = models.create("wrn-10-1", seed=1)
  x = jax.random.uniform(jax.random.key(1), (8, 32, 32, 3))
  stats = lambda: np.asarray(net.bn1.mean.get_value()).copy()
  before = stats()
  net.train()
  train_logits = net(x)            # batch statistics; running averages move
  assert not np.allclose(stats(), before)
  net.eval()
  frozen = stats()
  eval_logits = net(x)             # running statistics; state untouched
  np.testing.assert_array_equal(stats(), frozen)
  assert not np.allclose(train_logits, eval_logits)
  # In eval mode the split state is a pure function input, as jit-ed evaluation needs.
  graphdef, state = nnx.split(net)
  out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
  np.testing.assert_allclose(out, eval_logits, atol=1e-5)


def test_save_load_returns_eval_mode_model(tmp_path):
  net = models.create("small-cnn", seed=2)
  entry, options = models.resolve("small-cnn")
  d = models.save(net, tmp_path / "cnn", arch="small-cnn", options=options)
  loaded = models.load(d)
  assert loaded.classifier.drop.deterministic
  net.eval()
  x = jax.random.uniform(jax.random.key(2), (3, 28, 28, 1))
  np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(net(x)))


# BatchNorm statistics (issue 16, item 6): PyTorch's update rule, since the models are ports of
# PyTorch models and export back to PyTorch.


def _torch_bn_steps(torch_bn, jax_bn, batches):
  """Runs the same batches [B,...,C] through both layers in train mode; returns max diffs."""
  torch = pytest.importorskip("torch")
  torch_bn.train()
  jax_bn.train()
  worst = 0.0
  for x in batches:
    xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    yt = np.moveaxis(torch_bn(xt).detach().numpy(), 1, -1)
    worst = max(worst, float(np.abs(yt - np.asarray(jax_bn(jnp.asarray(x)))).max()))
  return (worst, np.abs(torch_bn.running_mean.numpy() - np.asarray(jax_bn.mean[...])).max(),
          np.abs(torch_bn.running_var.numpy() - np.asarray(jax_bn.var[...])).max())


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (6, 6)])   # BatchNorm2d [B,H,W,C], 1d [B,C]
def test_batch_norm_statistics_follow_pytorch_over_several_steps(shape):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  c = shape[-1]
  torch_bn = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(c)
  jax_bn = layers.batch_norm(c, rngs=nnx.Rngs(0))
  # Batches with different means and scales, so that every step moves the statistics.
  batches = [(rng.normal(size=shape) * (1 + k) + k).astype(np.float32) for k in range(6)]
  out, mean, var = _torch_bn_steps(torch_bn, jax_bn, batches)
  assert out < 1e-5 and mean < 1e-5 and var < 1e-5 * float(torch_bn.running_var.max())
  torch_bn.eval()
  jax_bn.eval()
  x = batches[0]
  yt = np.moveaxis(torch_bn(torch.from_numpy(np.moveaxis(x, -1, 1).copy())).detach().numpy(), 1, -1)
  np.testing.assert_allclose(np.asarray(jax_bn(jnp.asarray(x))), yt, atol=1e-5)


def test_batch_norm_one_step_uses_the_unbiased_variance():
  """The issue's example: 8 values per channel, one step. By hand, running_var = 0.9 * 1 +
  0.1 * var_unbiased; Flax's own update gives 0.9 + 0.1 * var_biased (7/8 of the batch term)."""
  x = np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1) ** 2        # 0, 1, 4, ..., 49
  # By hand: mean 140/8 = 17.5, sum of squares 4676, biased variance 4676/8 - 17.5^2 = 278.25,
  # unbiased 278.25 * 8/7 = 318.
  unbiased, mean = 318.0, 17.5
  bn = layers.batch_norm(1, rngs=nnx.Rngs(0))
  bn.train()
  bn(jnp.asarray(x))
  np.testing.assert_allclose(float(bn.var[...][0]), 0.9 + 0.1 * unbiased, rtol=1e-6)
  np.testing.assert_allclose(float(bn.mean[...][0]), 0.1 * mean, rtol=1e-6)
  flax_bn = nnx.BatchNorm(1, momentum=0.9, rngs=nnx.Rngs(0))
  flax_bn(jnp.asarray(x))
  np.testing.assert_allclose(float(flax_bn.var[...][0]), 0.9 + 0.1 * 278.25, rtol=1e-6)  # the bug


def test_batch_norm_refuses_one_value_per_channel_in_train_mode():
  bn = layers.batch_norm(3, rngs=nnx.Rngs(0))
  bn.train()
  with pytest.raises(ValueError, match="more than 1 value per channel"):
    bn(jnp.ones((1, 3)))
  bn.eval()
  assert bn(jnp.ones((1, 3))).shape == (1, 3)      # eval mode needs no batch statistics


def test_every_registered_model_uses_the_pytorch_batch_norm():
  """A new architecture that builds nnx.BatchNorm directly would update running_var the Flax
  way; every BN of every architecture in the registry must be layers.BatchNorm. (One entry
  per constructor, its smallest by depth and blocks: the layer types depend on the class.)"""
  smallest = {}
  for name in models.names():
    entry = models.get(name)
    size = (entry.defaults.get("depth", 0), sum(entry.defaults.get("blocks", ())))
    if entry.constructor not in smallest or size < smallest[entry.constructor][0]:
      smallest[entry.constructor] = (size, name)
  assert len(smallest) >= 8      # WRN, DM-WRN, ResNet, PreAct, ImageNet, Cohen, SmallCNN, MLP
  for _, name in smallest.values():
    n = models.get(name).defaults.get("num_classes", 3)       # the mlp has no default
    abstract = nnx.eval_shape(lambda name=name, n=n: models.create(name, num_classes=n))
    bns = [m for _, m in nnx.iter_graph(abstract) if isinstance(m, nnx.BatchNorm)]
    assert all(type(m) is layers.BatchNorm for m in bns), name
    assert all(m.momentum == 0.9 and m.epsilon == 1e-5 for m in bns), name
