"""evaluation.benchmark (issue 18, item 4) and the README's two-line RobustBench-style use.

The robust accuracy is checked against a hand calculation: for a two-class linear model
f(x) = W x + b, a point x with clean prediction c and margin m = (w_c - w_o) x + b_c - b_o is
robust in the Linf ball of radius eps (all of it inside [0, 1]) iff m > eps ||w_c - w_o||_1, and
APGD-CE, whose gradient sign is exactly the worst direction, finds the corner otherwise. The
README test runs the README's two lines on a tiny Carmon2019Unlabeled checkpoint written by
RobustBench's WideResNet and served from 127.0.0.1, and checks the clean accuracy against
RobustBench's module.
"""
import json
import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_abstain.errors import UserError
from jax_abstain.evaluation.benchmark import benchmark

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Linear2(nnx.Module):
  """f(x) = W vec(x) + b, two classes."""

  def __init__(self, w, b):
    self.fc = nnx.Linear(w.shape[0], 2, rngs=nnx.Rngs(0))
    self.fc.kernel.set_value(jnp.asarray(w))
    self.fc.bias.set_value(jnp.asarray(b))

  def __call__(self, x):
    return self.fc(x.reshape(x.shape[0], -1))


def _linear_case(n=24, eps=2 / 255, seed=0):
  rng = np.random.default_rng(seed)
  d = 8 * 8 * 3
  w = rng.normal(0, 1, (d, 2)).astype(np.float32) / d
  x = rng.uniform(0.2, 0.8, (n, 8, 8, 3)).astype(np.float32)
  z = x.reshape(n, -1) @ w
  b = np.array([0.0, -np.median(z[:, 1] - z[:, 0])], np.float32)
  logits = z + b
  pred = logits.argmax(1)
  margin = np.abs(logits[:, 0] - logits[:, 1])
  budget = eps * np.abs(w[:, 0] - w[:, 1]).sum()
  y = pred.copy()
  y[::5] = 1 - y[::5]                                  # some wrong labels
  return Linear2(w, b), x, y, pred, margin, budget


def test_robust_accuracy_is_the_hand_calculation(tmp_path, capsys):
  eps = 2 / 255
  model, x, y, pred, margin, budget = _linear_case(eps=eps)
  ratio = margin / budget
  assert (ratio > 1.05).sum() >= 5 and (ratio < 0.95).sum() >= 5     # both kinds present
  assert not np.any((ratio > 0.95) & (ratio < 1.05))                  # none on the edge
  robust = ratio > 1
  result = benchmark(model, "tiny", "Linf", eps="2/255", n_examples=len(x), attack="apgd-ce",
                     data=(x, y), out_dir=tmp_path / "bench", name="lin")
  assert result["clean_acc"] == pytest.approx(100 * np.mean(pred == y))
  assert result["apgd_ce_acc"] == pytest.approx(100 * np.mean((pred == y) & robust))
  entry = json.loads((tmp_path / "bench" / "lin.json").read_text())
  assert {k: entry[k] for k in ("name", "dataset", "threat_model", "eps", "architecture")} == {
      "name": "lin", "dataset": "tiny", "threat_model": "Linf", "eps": "2/255",
      "architecture": "Linear2"}
  report = (tmp_path / "bench" / "lin.csv").read_text().splitlines()
  assert report[0] == "sample_idx,label,pred,is_acc,conf,is_rob@2/255"
  # Label-free robustness: known for the misclassified samples too.
  rob_col = np.array([int(line.split(",")[5]) for line in report[1:]], bool)
  assert np.array_equal(rob_col, robust)
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f"clean accuracy: {100 * np.mean(pred == y):.2f}% ({int(np.sum(pred == y))}/24)"
  assert re.fullmatch(r"robust accuracy after APGD-CE: \d+\.\d\d% \(\d+/24\), total time "
                      r"\d+\.\d s", out[1])


def test_bad_arguments_are_one_line_before_anything_is_written(tmp_path):
  model, x, y, *_ = _linear_case(n=4)
  with pytest.raises(UserError) as e:
    benchmark(model, "tiny", "Linf2", eps="-1", n_examples=0, attack="pgd", data=(x, y),
              out_dir=tmp_path / "o")
  msg = str(e.value)
  assert "\n" not in msg
  for part in ("threat_model: expected Linf or L2, got 'Linf2'", "attack: expected one of",
               "n_examples: expected an integer >= 1, got 0"):
    assert part in msg
  with pytest.raises(UserError, match="n_examples 10 > the 4 test images"):
    benchmark(model, "tiny", "Linf", n_examples=10, data=(x, y), out_dir=tmp_path / "o")
  assert not (tmp_path / "o").exists()


def _readme_lines() -> str:
  text = (ROOT / "README.md").read_text()
  section = text[text.index("### Model zoo and PyTorch porting"):]
  block = section[section.index("```python") + len("```python"):]
  return block[:block.index("```")]


@pytest.mark.slow
def test_readme_two_lines_on_a_served_tiny_checkpoint(tmp_path, capsys):
  """The README's lines, run on a tiny checkpoint: the only changes are the served URL, the
  small size, the cache folder, the data (random images labelled by the model) and APGD-CE
  in place of the 4-attack ensemble (minutes on CPU)."""
  torch = pytest.importorskip("torch")
  import io  # pylint: disable=import-outside-toplevel
  import loopback_server  # pylint: disable=import-outside-toplevel
  import torch_reference_models as T  # pylint: disable=import-outside-toplevel
  from jax_abstain.porting import robustbench  # pylint: disable=import-outside-toplevel
  code = _readme_lines()
  assert 'models.load_robustbench("Carmon2019Unlabeled", dataset="cifar10", threat_model="Linf")' in code
  assert 'benchmark(model, "cifar10", "Linf", eps="8/255", n_examples=1000' in code
  module = T.randomize(T.robustbench_architecture("wide_resnet").WideResNet(
      depth=10, widen_factor=1, sub_block1=True), seed=4)
  buf = io.BytesIO()
  torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, buf)
  x = np.random.default_rng(1).uniform(0, 1, (12, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    pred = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).argmax(1).numpy()
  y = pred.copy()
  y[:3] = (y[:3] + 1) % 10
  gid = robustbench.entry("Carmon2019Unlabeled")["gdrive_ids"][0]
  with loopback_server.serve({f"/{gid}": buf.getvalue()}) as server:
    code = code.replace('threat_model="Linf")', 'threat_model="Linf", model_dir=MODEL_DIR, '
                        'progress=False, url=URL, depth=10, widen_factor=1)')
    code = code.replace('out_dir="runs/bench")', 'out_dir=OUT, data=(X, Y), attack="apgd-ce")')
    code = code.replace("n_examples=1000", "n_examples=12")
    scope = {"MODEL_DIR": tmp_path / "models", "URL": server.url("/{id}"), "X": x, "Y": y,
             "OUT": tmp_path / "bench"}
    exec(compile(code, "README.md", "exec"), scope)  # pylint: disable=exec-used
  result = scope["result"]
  assert result["clean_acc"] == pytest.approx(75.0)           # 9 of 12: RobustBench's module
  assert result["apgd_ce_acc"] <= result["clean_acc"]
  assert (tmp_path / "bench" / "model.json").is_file()
  assert "clean accuracy: 75.00% (9/12)" in capsys.readouterr().out
