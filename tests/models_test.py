"""Models: full-size topologies (parameter counts, no forward), registry metadata, train/eval."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_abstain import models
from jax_abstain.errors import UserError


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
      "Rebuffi2021Fixing_28_10_cutmix_ddpm": lambda: T.DMWideResNet(100, 28, 10),
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
            "Gowal2020Uncovering_28_10_extra", "Rebuffi2021Fixing_28_10_cutmix_ddpm",
            "Sehwag2021Proxy_R18", "Ding2020MMA", "wrn-28-10", "cifar-resnet110", "small-cnn",
            "preact-resnet18", "resnet50-imagenet", "mlp"):
    assert n in names
  meta = models.get("Rebuffi2021Fixing_28_10_cutmix_ddpm").metadata
  assert meta["dataset"] == "cifar100" and meta["threat_model"] == "Linf"
  assert models.get("Rebuffi2021Fixing_28_10_cutmix_ddpm").defaults["num_classes"] == 100
  assert models.get("Carmon2019Unlabeled").defaults["sub_block1"] is True
  assert models.get("Ding2020MMA").defaults["normalization"] == "per_image"
  with pytest.raises(UserError, match="known models: Carmon2019Unlabeled"):
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
