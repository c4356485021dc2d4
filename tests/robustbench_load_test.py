"""RobustBench models by name (issue 18, item 1), on checkpoints served from 127.0.0.1.

The checkpoints are written by RobustBench's own code (`robustbench` 1.1.1, its architecture
and zoo files loaded by path in `torch_reference_models`, not through the package's
`robustbench_torch`) at small depth/width, saved the way its files come ({'state_dict':
{'module.*'}} for Carmon2019Unlabeled, raw for the DeepMind models, without the ``mu``/
``sigma`` buffers for the zoo's wrapper classes). The tests check the logits of
`models.load_robustbench` against that module, the manifest, the cache hit without network,
a cut download resumed, a web page refused, offline, the refusal of an architecture that is
not built, and that the shipped table is what RobustBench's zoo files say.
"""
import hashlib
import io
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import loopback_server  # noqa: E402
import torch_reference_models as T  # noqa: E402
from jax_abstain import models  # noqa: E402
from jax_abstain.errors import UserError  # noqa: E402
from jax_abstain.models import zoo  # noqa: E402
from jax_abstain.porting import robustbench, robustbench_zoo  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
RTOL = 1e-4    # the bound: max |logit difference| / max |logit|


def _bytes(obj) -> bytes:
  buf = io.BytesIO()
  torch.save(obj, buf)
  return buf.getvalue()


def _inputs(n=5, seed=3):
  x = np.random.default_rng(seed).uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)
  return x, torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def _carmon_small():
  """RobustBench's WideResNet as Carmon2019Unlabeled builds it, at depth 10, width 1."""
  wrn = T.robustbench_architecture("wide_resnet").WideResNet
  return T.randomize(wrn(depth=10, widen_factor=1, sub_block1=True), seed=11)


def _gdrive_id(name, dataset="cifar10", threat="Linf"):
  return robustbench.entry(name, dataset, threat)["gdrive_ids"][0]


@pytest.fixture
def carmon(tmp_path):
  module = _carmon_small()
  sd = {f"module.{k}": v for k, v in module.state_dict().items()}
  blob = _bytes({"state_dict": sd, "epoch": 3})
  return module, blob, tmp_path / "models"


def test_load_robustbench_by_name_matches_robustbench_module(carmon, capsys):
  module, blob, model_dir = carmon
  gid = _gdrive_id("Carmon2019Unlabeled")
  with loopback_server.serve({f"/{gid}": blob}) as server:
    net = models.load_robustbench("Carmon2019Unlabeled", "cifar10", "Linf", model_dir,
                                  progress=False, url=server.url("/{id}"), depth=10,
                                  widen_factor=1)
    assert [p for p, _ in server.requests] == [f"/{gid}"]
  x, xt = _inputs()
  with torch.no_grad():
    ref = module(xt).numpy()
  diff = np.abs(np.asarray(net(jnp.asarray(x))) - ref).max()
  assert diff <= RTOL * np.abs(ref).max()
  # RobustBench's own layout: <model_dir>/<dataset>/<threat_model>/<name>.pt, beside the port.
  ckpt = model_dir / "cifar10" / "Linf" / "Carmon2019Unlabeled.pt"
  assert ckpt.read_bytes() == blob
  manifest = models.robustbench_manifest("Carmon2019Unlabeled", model_dir=model_dir)
  rb = manifest["source"]["robustbench"]
  assert (rb["name"], rb["dataset"], rb["threat_model"]) == ("Carmon2019Unlabeled", "cifar10",
                                                             "Linf")
  assert manifest["source"]["sha256"] == hashlib.sha256(blob).hexdigest()
  assert manifest["source"]["unwrapped"] == [
      "state_dict taken from the checkpoint's 'state_dict' entry",
      "'module.' (nn.DataParallel) removed from the keys"]
  assert rb["parity"]["checked"] and rb["parity"]["relative"] <= RTOL
  # The cache hit: no server at all.
  again = models.load_robustbench("Carmon2019Unlabeled", model_dir=model_dir, progress=False,
                                  url="http://127.0.0.1:9/{id}", depth=10, widen_factor=1)
  assert np.array_equal(np.asarray(again(jnp.asarray(x))), np.asarray(net(jnp.asarray(x))))


def test_cut_download_resumes_and_web_page_is_refused(carmon):
  _, blob, model_dir = carmon
  gid = _gdrive_id("Carmon2019Unlabeled")
  with loopback_server.serve({f"/{gid}": blob}) as server:
    server.cut_after = 20_000
    with pytest.raises(UserError, match="run again to resume"):
      models.load_robustbench("Carmon2019Unlabeled", model_dir=model_dir, progress=False,
                              url=server.url("/{id}"), depth=10, widen_factor=1)
    server.cut_after = None
    models.load_robustbench("Carmon2019Unlabeled", model_dir=model_dir, progress=False,
                            url=server.url("/{id}"), depth=10, widen_factor=1)
    assert server.requests[-1] == (f"/{gid}", "bytes=20000-")
  page = b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>"
  with loopback_server.serve({f"/{gid}": page}) as server:
    with pytest.raises(UserError, match="sent a web page, not a checkpoint") as e:
      models.load_robustbench("Carmon2019Unlabeled", model_dir=model_dir / "b", progress=False,
                              url=server.url("/{id}"), depth=10, widen_factor=1)
  assert "\n" not in str(e.value)
  assert not (model_dir / "b" / "cifar10" / "Linf" / "Carmon2019Unlabeled.pt").exists()


def test_offline_is_one_line_and_writes_nothing(tmp_path):
  with pytest.raises(UserError) as e:
    models.load_robustbench("Gowal2020Uncovering_28_10_extra", model_dir=tmp_path / "m",
                            progress=False, url="http://127.0.0.1:9/{id}")
  msg = str(e.value)
  assert "\n" not in msg and "put it at" in msg and "Gowal2020Uncovering_28_10_extra.pt" in msg
  assert not (tmp_path / "m").exists()


def test_names_that_are_not_built_or_unknown_are_refused(tmp_path):
  with pytest.raises(UserError, match=r"Chen2020Adversarial is not supported: its architecture "
                     r"\(an ensemble of several checkpoints\)") as e:
    models.load_robustbench("Chen2020Adversarial", model_dir=tmp_path)
  assert "torchax" in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(UserError, match=r"PreActResNet\(bn_before_fc=True"):
    models.load_robustbench("Addepalli2021Towards_PARN18", "cifar100", model_dir=tmp_path)
  with pytest.raises(UserError, match="did you mean Carmon2019Unlabeled"):
    models.load_robustbench("Carmon2019Unlabelled", model_dir=tmp_path)
  with pytest.raises(UserError, match="has one for cifar10 Linf"):
    models.load_robustbench("Carmon2019Unlabeled", "cifar100", model_dir=tmp_path)
  assert not any(tmp_path.iterdir())


def test_shipped_table_is_robustbench_zoo_parsed():
  """The shipped table is the parser's output on the installed robustbench (regenerate with
  `robustbench_zoo.write()` after upgrading it)."""
  shipped = (ROOT / "jax_abstain" / "models" / "robustbench_table.json").read_text()
  assert shipped == robustbench_zoo.render(robustbench_zoo.parse(),
                                           robustbench_zoo.robustbench_version())
  assert zoo.robustbench_table()["robustbench_version"] == "1.1.1"


def test_table_names_and_ids_are_robustbench_own():
  """Against the zoo files evaluated by RobustBench's code (torch_reference_models): every
  name of each leaderboard is in the table, in order, and the ids are the file's."""
  for dataset, threat, attr in robustbench_zoo.TABLES:
    theirs = list(T.robustbench_zoo(dataset, attr))
    ours = [r for r in zoo.robustbench_rows() if (r["dataset"], r["threat_model"]) ==
            (dataset, threat)]
    assert [r["name"] for r in ours] == theirs
  carmon = robustbench.entry("Carmon2019Unlabeled")
  assert carmon["gdrive_ids"] == ("15tUx-gkZMYx7BfEOw1GY5OKC-jECIsPQ",)
  assert robustbench.url_for("X") == ("https://drive.usercontent.google.com/download?id=X"
                                      "&export=download&confirm=t")
