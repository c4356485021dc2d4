"""Porting files saved by RobustBench's own modules (issue 16, item 2).

The PyTorch modules here are RobustBench's code (`robustbench` 1.1.1, installed without its
dependencies; `torch_reference_models.robustbench_zoo` loads it by path and says what cannot
load), not the project's copies: RobustBench's DMWideResNet keeps ``mean``/``std`` in
non-persistent buffers, so its state_dicts have no such keys, while its Wong2020Fast,
Engstrom2019Robustness and Rice2020Overfitting modules hold persistent ``mu``/``sigma`` that
the distributed files lack (RobustBench's ``load_model`` tolerates that), and its ImageNet
``normalize_model`` adds ``normalize.mean``/``normalize.std`` and a ``model.`` prefix. Each case
saves the state_dict the way RobustBench's files come (raw, under ``state_dict`` with the
``module.`` prefix of ``nn.DataParallel``, with or without the buffers and BN
``num_batches_tracked``) and asserts that the port's logits equal the RobustBench module's.
A port that took the normalisation from the file, dropped it, or refused files lacking it
fails these.
"""
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference_models as T  # noqa: E402  (tests/ is on sys.path under pytest)
from jax_abstain import models, porting  # noqa: E402
from jax_abstain.errors import UserError  # noqa: E402
from jax_abstain.models import layers  # noqa: E402

TOL = 1e-5     # max |logit difference|; the RobustBench modules' logits are O(1)-O(10)


def _rb_class(name, dataset="cifar10"):
  return T.robustbench_zoo_source(dataset)[1][name]


def _rb_arch(module, name):
  return getattr(T.robustbench_architecture(module), name)


def _dm(num_classes, depth, width, norm):
  a = T.robustbench_architecture("dm_wide_resnet")
  return a.DMWideResNet(num_classes=num_classes, depth=depth, width=width, activation_fn=a.Swish,
                        mean=norm[0], std=norm[1])


def _imagenet_wrapped():
  u = T.robustbench_architecture("utils_architectures")
  # torchvision does not load here: the network is the project's copy of its ResNet layout,
  # the wrapper (and so the key layout of the saved file) is RobustBench's normalize_model.
  return u.normalize_model(T.ImageNetResNet((1, 1, 1, 1), 10, 8), layers.IMAGENET_MEAN,
                           layers.IMAGENET_STD)


C10 = (layers.CIFAR10_MEAN, layers.CIFAR10_STD)
C100 = (layers.CIFAR100_MEAN, layers.CIFAR100_STD)

# id: (registry name, constructor overrides, RobustBench module factory, input HWC)
CASES = {
    "gowal_dm_c10": ("Gowal2020Uncovering_28_10_extra", dict(depth=10, width=1),
                     lambda: _dm(10, 10, 1, C10), (32, 32, 3)),
    "rebuffi_dm_c100": ("cifar100/Linf/Rebuffi2021Fixing_28_10_cutmix_ddpm", dict(depth=10, width=2),
                        lambda: _dm(100, 10, 2, C100), (32, 32, 3)),
    "carmon_wrn": ("Carmon2019Unlabeled", dict(depth=10, widen_factor=1),
                   lambda: _rb_arch("wide_resnet", "WideResNet")(depth=10, widen_factor=1,
                                                                 sub_block1=True), (32, 32, 3)),
    "ding_wrn_per_image": ("Ding2020MMA", dict(depth=10, widen_factor=2),
                           lambda: _rb_class("Ding2020MMANet")(depth=10, widen_factor=2),
                           (32, 32, 3)),
    "rice_wrn_mu_sigma": ("Rice2020Overfitting", dict(depth=10, widen_factor=1),
                          lambda: _rb_class("Rice2020OverfittingNet")(depth=10, widen_factor=1),
                          (32, 32, 3)),
    "sehwag_resnet": ("Sehwag2021Proxy_R18", dict(blocks=(1, 1, 1, 1)),
                      lambda: _rb_arch("resnet", "ResNet")(_rb_arch("resnet", "BasicBlock"),
                                                           [1, 1, 1, 1]), (32, 32, 3)),
    "wong_preact_mu_sigma": ("Wong2020Fast", {}, lambda: _rb_class("Wong2020FastNet")(),
                             (32, 32, 3)),
    "imagenet_normalize_model": ("resnet50-imagenet",
                                 dict(blocks=(1, 1, 1, 1), base_width=8, num_classes=10),
                                 _imagenet_wrapped, (64, 64, 3)),
}

NORM_KEYS = {"mean", "std", "mu", "sigma", "normalize.mean", "normalize.std"}


def _norm_keys(sd):
  return sorted(k for k in sd if k in NORM_KEYS)


def _save(sd, style, path):
  """A state_dict as RobustBench's files come."""
  if style == "without_buffers":      # the distributed files of the mu/sigma modules
    sd = {k: v for k, v in sd.items() if k not in NORM_KEYS}
  elif style == "no_counters":        # files from PyTorch < 0.4.1: no num_batches_tracked
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
  if style == "dataparallel":         # {'state_dict': {'module.*'}} as Carmon2019Unlabeled's
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1}, path)
  else:
    torch.save(dict(sd), path)


def _inputs(shape, n=3, seed=1):
  x = np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)
  return x, torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def _logits(module, xt):
  with torch.no_grad():
    return module(xt).numpy()


@pytest.fixture(scope="module")
def built():
  """case -> (RobustBench module with random weights and BN statistics, its logits, inputs)."""
  out = {}
  for case, (_, _, factory, shape) in CASES.items():
    module = T.randomize(factory(), seed=len(case))
    x, xt = _inputs(shape)
    out[case] = (module, _logits(module, xt), x)
  return out


def test_robustbench_state_dicts_hold_what_the_issue_says(built):
  # The premise of the cases, from RobustBench's code itself.
  assert _norm_keys(built["gowal_dm_c10"][0].state_dict()) == []
  np.testing.assert_allclose(built["gowal_dm_c10"][0].mean.flatten().numpy(), layers.CIFAR10_MEAN)
  assert _norm_keys(built["wong_preact_mu_sigma"][0].state_dict()) == ["mu", "sigma"]
  assert _norm_keys(built["rice_wrn_mu_sigma"][0].state_dict()) == ["mu", "sigma"]
  sd = built["imagenet_normalize_model"][0].state_dict()
  assert _norm_keys(sd) == ["normalize.mean", "normalize.std"]
  assert all(k.startswith(("model.", "normalize.")) for k in sd)


@pytest.mark.parametrize("style", ["raw", "dataparallel", "without_buffers", "no_counters"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_port_matches_robustbench_module(case, style, built, tmp_path):
  arch, opts, _, _ = CASES[case]
  module, ref, x = built[case]
  path = tmp_path / "rb.pt"
  _save(module.state_dict(), style, path)
  net, _, source = porting.convert(arch, path, **opts)
  diff = float(np.abs(np.asarray(net(jnp.asarray(x))) - ref).max())
  print(f"{case} {style}: max|diff| = {diff:.1e}, max|logit| = {np.abs(ref).max():.1f}")
  assert diff < TOL
  held = _norm_keys(module.state_dict()) if style not in ("without_buffers",) else []
  assert source["normalization"] == (
      "registry, checked against the file's " + ", ".join(held) if held
      else "registry (the file holds none)")


def test_old_files_with_dm_buffers_are_checked_not_copied(built, tmp_path):
  """A state_dict saved from a DeepMind module whose mean/std are persistent (earlier
  RobustBench versions; this project's exports before issue 16) holds them: equal values
  port; other values are one line naming both."""
  module, ref, x = built["gowal_dm_c10"]
  sd = dict(module.state_dict())
  ok = tmp_path / "with_buffers.pt"
  torch.save({**sd, "mean": module.mean.clone(), "std": module.std.clone()}, ok)
  net, _, _ = porting.convert("Gowal2020Uncovering_28_10_extra", ok, depth=10, width=1)
  assert np.abs(np.asarray(net(jnp.asarray(x))) - ref).max() < TOL
  wrong = tmp_path / "cifar100_buffers.pt"
  torch.save({**sd, "mean": torch.tensor(layers.CIFAR100_MEAN).view(3, 1, 1),
              "std": torch.tensor(layers.CIFAR100_STD).view(3, 1, 1)}, wrong)
  with pytest.raises(UserError) as e:
    porting.convert("Gowal2020Uncovering_28_10_extra", wrong, depth=10, width=1)
  msg = str(e.value)
  assert "\n" not in msg
  assert "mean (0.5071, 0.4865, 0.4409)" in msg and "std (0.2673, 0.2564, 0.2762)" in msg
  assert "normalises with mean (0.4914, 0.4822, 0.4465), std (0.2471, 0.2435, 0.2616)" in msg


def test_normalisation_of_another_model_is_refused(built, tmp_path):
  """Rice2020Overfitting's file (with its mu/sigma) ported as a WRN without normalisation
  would silently lose the normalisation; it is refused, naming the values."""
  module, _, _ = built["rice_wrn_mu_sigma"]
  path = tmp_path / "rice.pt"
  torch.save(module.state_dict(), path)
  with pytest.raises(UserError) as e:
    porting.convert("wrn-10-1", path)
  msg = str(e.value)
  assert "mu (0.4914, 0.4822, 0.4465)" in msg and "sigma (0.2471, 0.2435, 0.2616)" in msg
  assert "'wrn-10-1' normalises with mean (0, 0, 0), std (1, 1, 1)" in msg
  bad = tmp_path / "four_channels.pt"
  torch.save({**module.state_dict(), "mu": torch.zeros(1, 4, 1, 1)}, bad)
  with pytest.raises(UserError, match=r"mis-shaped keys \(mu \(1, 4, 1, 1\) != \(3,\)\)"):
    porting.convert("Rice2020Overfitting", bad, depth=10, widen_factor=1)


def test_half_precision_buffers_pass_the_check(built, tmp_path):
  module, ref, x = built["wong_preact_mu_sigma"]
  path = tmp_path / "half_mu.pt"
  sd = dict(module.state_dict())
  torch.save({**sd, "mu": sd["mu"].half(), "sigma": sd["sigma"].half()}, path)
  net, _, _ = porting.convert("Wong2020Fast", path)
  assert np.abs(np.asarray(net(jnp.asarray(x))) - ref).max() < TOL


def test_export_loads_into_robustbench_modules(built, tmp_path):
  """The exported file is like RobustBench's: strict loading into DMWideResNet, and into the
  mu/sigma modules as load_model loads their files (only mu, sigma missing)."""
  for case, strict in (("gowal_dm_c10", True), ("wong_preact_mu_sigma", False)):
    arch, opts, factory, shape = CASES[case]
    module, ref, x = built[case]
    path = tmp_path / f"{case}.pt"
    torch.save(module.state_dict(), path)
    net, _, _ = porting.convert(arch, path, **opts)
    back = factory().eval()
    result = back.load_state_dict(porting.to_torch_state_dict(net), strict=strict)
    if not strict:
      assert sorted(result.missing_keys) == ["mu", "sigma"] and not result.unexpected_keys
    assert np.abs(_logits(back, _inputs(shape)[1]) - ref).max() < TOL


def test_issue_command_on_a_full_size_gowal_file(tmp_path, capsys):
  """The issue's command on a file saved from RobustBench's Gowal2020Uncovering_28_10_extra."""
  from jax_abstain.cli import port  # pylint: disable=import-outside-toplevel
  module = T.randomize(T.robustbench_zoo()["Gowal2020Uncovering_28_10_extra"](), seed=5)
  ckpt = tmp_path / "g.pt"
  torch.save(module.state_dict(), ckpt)
  x, xt = _inputs((32, 32, 3), n=2)
  ref = _logits(module, xt)
  out = tmp_path / "D"
  assert port.main(["--arch", "Gowal2020Uncovering_28_10_extra", "--checkpoint", ckpt,
                    "--out", out]) == 0
  assert "ported" in capsys.readouterr().out
  net = models.load(out)
  assert models.io.read_manifest(out)["source"]["normalization"] == "registry (the file holds none)"
  assert np.abs(np.asarray(net(jnp.asarray(x))) - ref).max() < TOL


# The RobustBench names registered by hand before the table was generated (issue 16); every
# entry's topology is checked in tests/robustbench_families_test.py.
FULL_SIZE = (("Carmon2019Unlabeled", "cifar10"), ("Wang2020Improving", "cifar10"),
             ("Zhang2019Theoretically", "cifar10"), ("Ding2020MMA", "cifar10"),
             ("Gowal2020Uncovering_28_10_extra", "cifar10"),
             ("Rebuffi2021Fixing_28_10_cutmix_ddpm", "cifar100"), ("Sehwag2021Proxy_R18", "cifar10"),
             ("Wong2020Fast", "cifar10"), ("Engstrom2019Robustness", "cifar10"),
             ("Rice2020Overfitting", "cifar10"))


@pytest.mark.slow
def test_every_robustbench_name_at_full_size(tmp_path):
  """These RobustBench names, built by RobustBench's own zoo entry, saved raw, ported by
  registry name: logits equal."""
  for name, dataset in FULL_SIZE:
    module = T.randomize(T.robustbench_zoo(dataset)[name](), seed=3)
    x, xt = _inputs((32, 32, 3), n=2)
    ref = _logits(module, xt)
    path = tmp_path / f"{name}.pt"
    torch.save(module.state_dict(), path)
    net, _, _ = porting.convert(models.zoo.robustbench_key(name, dataset, "Linf"), path)
    diff = float(np.abs(np.asarray(net(jnp.asarray(x))) - ref).max())
    print(f"{name}: max|diff| = {diff:.1e}")
    assert diff < TOL, name
    path.unlink()
