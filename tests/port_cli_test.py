"""`jax-abstain-port` details (issue 20, item 8; issue 18, item 1): --list (header, counts per
leaderboard, normalisation of every name), an existing --out names --overwrite, the manifest
records how the file was unwrapped, --export keeps num_batches_tracked without PyTorch
warnings, and --robustbench NAME on a checkpoint served from 127.0.0.1."""
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import loopback_server  # noqa: E402
import torch_reference_models as T  # noqa: E402
from jax_abstain import models  # noqa: E402
from jax_abstain.cli import common, port  # noqa: E402
from jax_abstain.models import zoo  # noqa: E402
from jax_abstain.porting import robustbench, robustbench_zoo  # noqa: E402


def _run(argv, capsys):
  with pytest.raises(SystemExit) as e:
    common.run_with_clean_errors(port.main, [str(a) for a in argv])
  return e.value.code, capsys.readouterr()


def test_list_has_a_header_counts_and_normalisations(capsys):
  assert port.main(["--list"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("RobustBench 1.1.1 models by name") and "native:" in out[0]
  rows = zoo.robustbench_rows()
  for dataset, threat, attr in robustbench_zoo.TABLES:
    total = len(T.robustbench_zoo(dataset, attr))     # RobustBench's own count
    native = sum(1 for r in rows if (r["dataset"], r["threat_model"]) == (dataset, threat)
                 and r["family"])
    assert (f"{dataset} {threat}: {native} native, 0 generic, {total - native} not "
            f"({total} entries)") in out
  line = next(s for s in out if s.split()[:1] == ["Gowal2020Uncovering_28_10_extra"])
  assert line.split()[1:3] == ["native", "DM-WRN-28-10"]
  assert "mean (0.4914, 0.4822, 0.4465), std (0.2471, 0.2435, 0.2616)" in line
  line = next(s for s in out if s.split()[:1] == ["Chen2020Adversarial"])
  assert "not" in line.split() and "an ensemble of several checkpoints" in line
  line = next(s for s in out if s.split()[:1] == ["cifar-resnet110"])
  assert line.endswith("Cohen et al. CIFAR-10 mean/std")
  assert port.main(["--list", "--dataset", "cifar100"]) == 0
  out = capsys.readouterr().out
  assert "cifar100 Linf:" in out and "cifar10 Linf:" not in out


@pytest.fixture
def wrn_file(tmp_path):
  module = T.randomize(T.WideResNet(10, 1, 10), seed=2)     # num_batches_tracked = 1000
  path = tmp_path / "w.pt"
  torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()},
              "epoch": 9}, path)
  return module, path


def test_out_exists_names_overwrite_and_manifest_records_unwrapping(wrn_file, tmp_path, capsys):
  _, ckpt = wrn_file
  out = tmp_path / "D"
  assert port.main(["--arch", "wrn-10-1", "--checkpoint", ckpt, "--out", out]) == 0
  source = models.read_manifest(out)["source"]
  assert source["unwrapped"] == ["state_dict taken from the checkpoint's 'state_dict' entry",
                                 "'module.' (nn.DataParallel) removed from the keys"]
  code, res = _run(["--arch", "wrn-10-1", "--checkpoint", ckpt, "--out", out], capsys)
  assert code == 2 and "pass --overwrite" in res.err and len(res.err.strip().splitlines()) == 1
  assert port.main(["--arch", "wrn-10-1", "--checkpoint", ckpt, "--out", out,
                    "--overwrite"]) == 0


def test_export_keeps_counters_without_warnings(wrn_file, tmp_path, capsys):
  module, ckpt = wrn_file
  out = tmp_path / "D"
  assert port.main(["--arch", "wrn-10-1", "--checkpoint", ckpt, "--out", out]) == 0
  pt = tmp_path / "back.pt"
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert port.main(["--export", out, "--out", pt]) == 0
  assert [str(w.message) for w in caught] == []
  back = torch.load(pt, weights_only=True)
  theirs = module.state_dict()
  for k, v in theirs.items():
    if k.endswith("num_batches_tracked"):
      assert int(back[k]) == int(v) == 1000
    else:
      np.testing.assert_allclose(back[k].numpy(), v.numpy(), rtol=0, atol=0)
  code, res = _run(["--export", out, "--out", pt], capsys)
  assert code == 2 and "pass --overwrite" in res.err


def test_robustbench_by_name_on_the_command_line(tmp_path, capsys, monkeypatch):
  module = T.randomize(T.robustbench_architecture("dm_wide_resnet").DMWideResNet(
      num_classes=100, depth=10, width=1,
      activation_fn=T.robustbench_architecture("dm_wide_resnet").Swish,
      mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)), seed=8)
  buf = io.BytesIO()
  torch.save(module.state_dict(), buf)
  gid = robustbench.entry("Gowal2020Uncovering", "cifar100")["gdrive_ids"][0]
  with loopback_server.serve({f"/{gid}": buf.getvalue()}) as server:
    monkeypatch.setenv(robustbench.ENV_URL, server.url("/{id}"))
    monkeypatch.setenv("JAX_ABSTAIN_CACHE", str(tmp_path / "cache"))
    # Full size (DM-WRN-70-16) would not match this small file: refused, nothing cached.
    code, res = _run(["--robustbench", "Gowal2020Uncovering", "--dataset", "cifar100"], capsys)
    assert code == 2 and "does not match architecture" in res.err
  assert not list((tmp_path / "cache").rglob("*.jax"))
  code, res = _run(["--robustbench", "Pang2020Boosting"], capsys)
  assert code == 2 and "BoostingWideResNet" in res.err and "torchax" in res.err


@pytest.mark.slow
def test_robustbench_full_size_ding_via_cli(tmp_path, capsys, monkeypatch):
  """Ding2020MMA (WRN-28-4, per-image standardisation; 23 MB) at full size, built by
  RobustBench's own zoo class: --robustbench downloads, ports, checks and writes --out."""
  module = T.randomize(T.robustbench_zoo("cifar10", "linf")["Ding2020MMA"](), seed=5)
  buf = io.BytesIO()
  torch.save(module.state_dict(), buf)
  gid = robustbench.entry("Ding2020MMA")["gdrive_ids"][0]
  out = tmp_path / "ding"
  with loopback_server.serve({f"/{gid}": buf.getvalue()}) as server:
    monkeypatch.setenv(robustbench.ENV_URL, server.url("/{id}"))
    assert port.main(["--robustbench", "Ding2020MMA", "--model-dir", tmp_path / "m",
                      "--out", out]) == 0
  printed = capsys.readouterr().out
  assert printed.startswith(f"Ding2020MMA (cifar10 Linf) -> {out} (max |logit difference|")
  x = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    ref = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  got = np.asarray(models.load(out)(x))
  assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
  parity = models.read_manifest(out)["source"]["robustbench"]["parity"]
  assert parity["checked"] and parity["relative"] <= 1e-4
