"""Porting: parity with PyTorch per architecture family, CLI end to end, bad inputs, round trip.

The PyTorch modules come from `torch_reference_models` (own definitions with the zoos' key
names), get random weights and non-trivial BN statistics, and run in eval mode. Depths and
widths are reduced so the suite stays fast; the full-size topologies are checked in
models_test.py. Files saved by RobustBench's own modules (its buffers, key layouts): see
porting_robustbench_test.py.
"""
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference_models as T  # noqa: E402  (tests/ is on sys.path under pytest)
from jax_abstain import models, porting  # noqa: E402
from jax_abstain.errors import UserError  # noqa: E402
from jax_abstain.models import layers  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-4

C10 = (layers.CIFAR10_MEAN, layers.CIFAR10_STD)
COHEN = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
IMAGENET = (layers.IMAGENET_MEAN, layers.IMAGENET_STD)

# id: (registry name, constructor overrides, torch module factory, outside normalization,
#      input shape HWC, how the zoo saves it)
CASES = {
    "wrn_sub_block1": ("wrn-10-1", dict(sub_block1=True),
                       lambda: T.WideResNet(10, 1, 10, sub_block1=True), None, (32, 32, 3), "raw"),
    "wrn_16_2": ("wrn-16-2", {}, lambda: T.WideResNet(16, 2, 10), None, (32, 32, 3), "state_dict"),
    "wrn_ding_per_image": ("Ding2020MMA", dict(depth=10, widen_factor=2),
                           lambda: T.WideResNet(10, 2, 10, per_image=True), None, (32, 32, 3),
                           "model"),
    "dm_wrn_swish": ("dm-wrn-10-1", {}, lambda: T.DMWideResNet(10, 10, 1), None, (32, 32, 3),
                     "module"),
    "dm_wrn_cifar100": ("cifar100/Linf/Rebuffi2021Fixing_28_10_cutmix_ddpm", dict(depth=10, width=2),
                        lambda: T.DMWideResNet(100, 10, 2, layers.CIFAR100_MEAN, layers.CIFAR100_STD),
                        None, (32, 32, 3), "model_state_dict"),
    "resnet18": ("resnet18", dict(base_width=16), lambda: T.ResNet(base_width=16), None,
                 (32, 32, 3), "module"),
    "resnet50_cifar": ("resnet50", dict(blocks=(2, 1, 1, 1), base_width=8),
                       lambda: T.ResNet((2, 1, 1, 1), bottleneck=True, base_width=8), None,
                       (32, 32, 3), "raw"),
    "preact_resnet18": ("preact-resnet18", dict(base_width=16),
                        lambda: T.PreActResNet(base_width=16), C10, (32, 32, 3), "raw"),
    "resnet50_imagenet": ("resnet50-imagenet", dict(blocks=(2, 1, 1, 1), base_width=8, num_classes=10),
                          lambda: T.ImageNetResNet((2, 1, 1, 1), 10, 8), IMAGENET, (64, 64, 3),
                          "module"),
    "cohen_resnet8": ("cifar-resnet110", dict(depth=8), lambda: T.CifarResNet(8), COHEN,
                      (32, 32, 3), "cohen"),
    "cohen_resnet20": ("cifar-resnet20", {}, lambda: T.CifarResNet(20), COHEN, (32, 32, 3), "cohen"),
    "small_cnn": ("small-cnn", {}, lambda: T.SmallCNN(), None, (28, 28, 1), "raw"),
    "mlp": ("mlp", dict(num_classes=3, in_features=2), lambda: T.MLP(), None, (2,), "raw"),
}


def _save_like_zoo(module, style, path):
  """Writes the state_dict the way the respective zoo / training script does."""
  sd = module.state_dict()
  if style == "raw":
    obj = sd
  elif style == "module":          # nn.DataParallel
    obj = {f"module.{k}": v for k, v in sd.items()}
  elif style == "cohen":           # {'arch', 'state_dict' of Sequential(NormalizeLayer, net)}
    obj = {"epoch": 90, "arch": "cifar_resnet110",
           "state_dict": {f"1.{k}": v for k, v in sd.items()}}
  else:                            # under 'state_dict' / 'model_state_dict' / 'model'
    obj = {style: sd, "epoch": 1}
  torch.save(obj, path)


def _inputs(shape, n=4, seed=1):
  x = np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if len(shape) == 3 else x)
  return x, xt


def _torch_logits(module, norm, xt):
  if norm is not None:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in norm)
    xt = (xt - mean) / std
  with torch.no_grad():
    return module(xt).numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_pytorch(case, tmp_path):
  arch, opts, factory, norm, shape, style = CASES[case]
  module = T.randomize(factory(), seed=len(case))
  x, xt = _inputs(shape)
  ref = _torch_logits(module, norm, xt)
  ckpt = tmp_path / "model.pt"
  _save_like_zoo(module, style, ckpt)
  net, _, source = porting.convert(arch, ckpt, **opts)
  out = np.asarray(net(jnp.asarray(x)))
  diff = float(np.abs(out - ref).max())
  print(f"parity {case}: max|diff| = {diff:.2e} (max|logit| = {np.abs(ref).max():.1f})")
  assert out.shape == ref.shape
  assert diff < TOL
  assert len(source["sha256"]) == 64


def test_round_trip_jax_torch_jax_is_exact(tmp_path):
  net = models.create("dm-wrn-10-1", seed=3)
  net.eval()
  sd = porting.to_torch_state_dict(net)
  module = T.DMWideResNet(10, 10, 1)
  module.load_state_dict(sd, strict=True)       # the exported dict fits the torch module
  path = porting.export_state_dict(net, tmp_path / "export.pt")
  back, _, _ = porting.convert("dm-wrn-10-1", path)
  for a, b in zip(models.io._flat(net).items(), models.io._flat(back).items()):  # pylint: disable=protected-access
    assert a[0] == b[0]
    np.testing.assert_array_equal(np.asarray(a[1][...]), np.asarray(b[1][...]))
  x, xt = _inputs((32, 32, 3), n=2)
  np.testing.assert_allclose(np.asarray(net(jnp.asarray(x))), _torch_logits(module.eval(), None, xt),
                             atol=TOL)


def test_wrn_sub_block1_exports_for_strict_torch_loading():
  net = models.create("wrn-10-1", sub_block1=True)
  sd = porting.to_torch_state_dict(net)
  assert any(k.startswith("sub_block1.") for k in sd)
  T.WideResNet(10, 1, 10, sub_block1=True).load_state_dict(sd, strict=True)


def _run_port(*args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "jax_abstain.cli.port", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def cohen_ckpt(tmp_path_factory):
  module = T.randomize(T.CifarResNet(20), seed=7)
  path = tmp_path_factory.mktemp("ckpt") / "noise_0.25.pth.tar"
  _save_like_zoo(module, "cohen", path)
  return module, path


def test_cli_port_then_load(tmp_path):
  # The CLI ports a registry topology as is, so use a small registered one (ResNet-20).
  ckpt20 = tmp_path / "r20.pt"
  m20 = T.randomize(T.CifarResNet(20), seed=8)
  _save_like_zoo(m20, "cohen", ckpt20)
  out = tmp_path / "ported"
  r = _run_port("--arch", "cifar-resnet20", "--checkpoint", ckpt20, "--out", out)
  assert r.returncode == 0, r.stderr
  manifest = models.io.read_manifest(out)
  assert manifest["architecture"] == "cifar-resnet20"
  assert manifest["num_classes"] == 10
  assert manifest["source"]["sha256"] == porting.checkpoint.sha256(ckpt20)
  assert manifest["normalization"]["std"] == pytest.approx(COHEN[1])
  net = models.load(out)
  x, xt = _inputs((32, 32, 3))
  np.testing.assert_allclose(np.asarray(net(jnp.asarray(x))), _torch_logits(m20, COHEN, xt),
                             atol=TOL)
  # and back to PyTorch
  r = _run_port("--export", out, "--out", tmp_path / "back.pt")
  assert r.returncode == 0, r.stderr
  T.CifarResNet(20).load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True), strict=True)


def _bad_files(tmp_path, cohen_module):
  files = {}
  files["not_a_checkpoint"] = tmp_path / "notes.pt"
  files["not_a_checkpoint"].write_text("this is not a checkpoint\n")
  good = tmp_path / "good.pt"
  _save_like_zoo(cohen_module, "raw", good)
  data = good.read_bytes()
  files["truncated"] = tmp_path / "truncated.pt"
  files["truncated"].write_bytes(data[: len(data) // 2])
  sd = cohen_module.state_dict()
  files["missing_key"] = tmp_path / "missing.pt"
  torch.save({k: v for k, v in sd.items() if k != "layer2.0.conv1.weight"}, files["missing_key"])
  files["unexpected_key"] = tmp_path / "unexpected.pt"
  torch.save({**sd, "extra.weight": torch.zeros(3)}, files["unexpected_key"])
  files["wrong_shape"] = tmp_path / "shape.pt"
  torch.save({**sd, "fc.weight": torch.zeros(100, 64)}, files["wrong_shape"])
  files["other_architecture"] = tmp_path / "wrn.pt"
  torch.save(T.WideResNet(10, 1).state_dict(), files["other_architecture"])
  files["needs_pickle"] = tmp_path / "pickled.pt"
  torch.save({"state_dict": sd, "best_acc": np.float64(0.9)}, files["needs_pickle"])
  files["missing_file"] = tmp_path / "nope.pt"
  return files


EXPECTED = {
    "not_a_checkpoint": "not a PyTorch checkpoint",
    "truncated": "truncated",
    "missing_key": "1 missing keys (layer2.0.conv1.weight)",
    "unexpected_key": "1 unexpected keys (extra.weight)",
    "wrong_shape": "fc.weight (100, 64) != (10, 64)",
    "other_architecture": "does not match architecture 'cifar-resnet20'",
    "needs_pickle": "pickles more than tensors",
    "missing_file": "no such checkpoint file",
}


def test_bad_checkpoints_fail_cleanly_in_library(cohen_ckpt, tmp_path):
  files = _bad_files(tmp_path, cohen_ckpt[0])
  for name, path in files.items():
    with pytest.raises(UserError) as e:
      porting.convert("cifar-resnet20", path)
    assert EXPECTED[name] in str(e.value), (name, str(e.value))
    assert "\n" not in str(e.value)


def _port_in_process(argv, capsys):
  """Runs the CLI entry point in this process (a subprocess per case would cost seconds)."""
  from jax_abstain.cli import common as cli  # pylint: disable=import-outside-toplevel
  from jax_abstain.cli import port
  with pytest.raises(SystemExit) as e:
    cli.run_with_clean_errors(port.main, [str(a) for a in argv])
  return e.value.code, capsys.readouterr().err


def test_bad_inputs_cli_one_line_and_no_output(cohen_ckpt, tmp_path, capsys):
  files = _bad_files(tmp_path, cohen_ckpt[0])
  cases = [("cifar-resnet20", path, EXPECTED[name]) for name, path in files.items()]
  cases.append(("NoSuchModel2099", cohen_ckpt[1], "unknown model 'NoSuchModel2099'"))
  for arch, ckpt, expected in cases:
    out = tmp_path / f"out_{ckpt.stem}_{arch}"
    code, err = _port_in_process(["--arch", arch, "--checkpoint", ckpt, "--out", out], capsys)
    assert code == 2, (arch, ckpt, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert not out.exists()
    assert not list(tmp_path.glob(f".{out.name}*"))


def test_cli_refuses_non_empty_out(cohen_ckpt, tmp_path, capsys):
  out = tmp_path / "taken"
  out.mkdir()
  (out / "keep.txt").write_text("x")
  code, err = _port_in_process(["--arch", "cifar-resnet20", "--checkpoint", cohen_ckpt[1],
                                "--out", out, "--num-classes", "10"], capsys)
  assert code == 2 and "not empty" in err
  assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_load_refuses_corrupt_or_mismatched_dirs(tmp_path):
  net = models.create("wrn-10-1")
  d = models.save(net, tmp_path / "m", arch="wrn-10-1",
                  options=models.resolve("wrn-10-1")[1])
  assert isinstance(models.load(d), type(net))
  with pytest.raises(UserError, match="not empty"):
    models.save(net, d, arch="wrn-10-1", options={})
  weights = d / "weights.safetensors"
  data = bytearray(weights.read_bytes())
  data[-1] ^= 0xFF
  weights.write_bytes(bytes(data))
  with pytest.raises(UserError, match="sha256 differs"):
    models.load(d)
  # a manifest naming another architecture than the weights
  d2 = models.save(net, tmp_path / "m2", arch="wrn-10-1", options=models.resolve("wrn-10-1")[1])
  text = (d2 / "manifest.json").read_text().replace('"widen_factor": 1', '"widen_factor": 2')
  (d2 / "manifest.json").write_text(text)
  with pytest.raises(UserError, match="does not match architecture"):
    models.load(d2)
  (d2 / "manifest.json").write_text("{not json")
  with pytest.raises(UserError, match="not valid JSON"):
    models.load(d2)
  with pytest.raises(UserError, match="not a model directory"):
    models.load(tmp_path / "empty")


def test_full_size_wrn_28_10_ports_in_seconds(tmp_path):
  import time  # pylint: disable=import-outside-toplevel
  module = T.randomize(T.WideResNet(28, 10, 10, sub_block1=True), seed=11)
  ckpt = tmp_path / "carmon.pt"
  _save_like_zoo(module, "module", ckpt)
  x, xt = _inputs((32, 32, 3), n=2)
  ref = _torch_logits(module, None, xt)
  start = time.time()
  out_dir = porting.port("Carmon2019Unlabeled", ckpt, tmp_path / "carmon")
  elapsed = time.time() - start
  out = np.asarray(models.load(out_dir)(jnp.asarray(x)))
  print(f"WRN-28-10 port {elapsed:.1f}s, parity max|diff| = {np.abs(out - ref).max():.2e}")
  assert elapsed < 30
  assert np.abs(out - ref).max() < TOL


@pytest.mark.parametrize("case", ["wrn_16_2", "dm_wrn_swish", "resnet50_cifar", "preact_resnet18",
                                  "cohen_resnet8", "resnet50_imagenet"])
def test_train_mode_statistics_match_pytorch(case, tmp_path):
  """Issue 16, item 6, per family: after porting, three train-mode forward passes of both
  networks on the same batches give the same logits and the same running statistics in every
  BatchNorm (PyTorch: momentum 0.1, running_var from the unbiased batch variance). Flax's own
  update (biased variance) fails this by the factor (n-1)/n on each batch term."""
  arch, opts, factory, norm, shape, style = CASES[case]
  module = T.randomize(factory(), seed=len(case))
  ckpt = tmp_path / "model.pt"
  _save_like_zoo(module, style, ckpt)
  net, _, _ = porting.convert(arch, ckpt, **opts)
  net.train()
  module.train()
  for step in range(3):
    x, xt = _inputs(shape, n=4, seed=10 + step)
    ref = _torch_logits(module, norm, xt)        # train-mode BN updates under no_grad too
    out = np.asarray(net(jnp.asarray(x)))
    assert np.abs(out - ref).max() < TOL * max(1.0, float(np.abs(ref).max()))
  ours = porting.to_torch_state_dict(net)
  stats = {k: v for k, v in module.state_dict().items()
           if ".running_" in k or k.startswith("running_")}
  assert len(stats) >= 10
  for k, v in stats.items():
    np.testing.assert_allclose(ours[k].numpy(), v.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
