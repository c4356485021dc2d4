"""Every registered RobustBench entry against RobustBench's own module (issue 18, item 1).

Topology, every entry at full size: the constructor in RobustBench's zoo file, evaluated by
`torch_reference_models.robustbench_zoo` (RobustBench's code loaded by path) on PyTorch's meta
device, has exactly the tensors (names and shapes) that the port of the registry entry
expects, apart from the normalisation buffers that the port takes from the registry. A
registry entry built from a misread table (another depth, width, block, class count, a
missing ``sub_block1`` or bias) fails here.

Logits, DeepMind's PreAct ResNet-18 at full size (its only sizes are 18 and 34), and each WideResNet / DeepMind WRN variant of the table (with and without ``sub_block1``,
Swish and SiLU, the ``mu``/``sigma`` classes, ``2x - 1``, per-image standardisation, CIFAR-100)
at small depth and width: RobustBench's expression with the size replaced, random weights and
BatchNorm statistics, loaded into the port; max |logit difference| <= `RTOL` of the largest
|logit|. A port with the wrong normalisation, activation or padding fails here.
"""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

import torch_reference_models as T  # noqa: E402
from jax_abstain import models, porting  # noqa: E402
from jax_abstain.models import zoo  # noqa: E402
from jax_abstain.porting import mapping, robustbench_torch, robustbench_zoo  # noqa: E402

RTOL = 1e-5
NORM_BUFFERS = {"mu", "sigma", "mean", "std"}
ATTR = {(d, t): a for d, t, a in robustbench_zoo.TABLES}


def _native():
  return [r for r in zoo.robustbench_rows() if r["family"]]


def _key(row):
  return zoo.robustbench_key(row["name"], row["dataset"], row["threat_model"])


def _our_shapes(key, **sizes):
  entry, options = models.resolve(key, **sizes)
  net = nnx.eval_shape(lambda: entry.constructor(rngs=nnx.Rngs(0), **options))
  tab = mapping.table(net)
  return {r.torch_key: tuple(r.torch_shape) for r in tab.rules}, tab.counters


@pytest.mark.slow
def test_every_registered_entry_has_robustbench_topology():
  """About 6 minutes on the loaded 2-core machine (36 distinct Flax topologies traced)."""
  rows = _native()
  assert len(rows) == 108
  seen, built = {}, {}
  for row in rows:
    opts = (row["family"], repr(sorted(row["options"].items())))
    if opts not in built:
      built[opts] = _our_shapes(_key(row))
    ours, counters = built[opts]
    signature = (row["dataset"], row["model"])
    if signature not in seen:
      with torch.device("meta"):
        module = T.robustbench_zoo(row["dataset"], ATTR[row["dataset"], row["threat_model"]])[
            row["name"]]()
      seen[signature] = {k: tuple(v.shape) for k, v in module.state_dict().items()
                         if k not in NORM_BUFFERS}
    theirs = seen[signature]
    assert {k: v for k, v in theirs.items() if k not in counters} == ours, row["name"]
    assert set(theirs) - set(ours) <= counters, row["name"]


def _variants():
  """One row per distinct small-size variant (family, options without size, normalisation)."""
  out = {}
  for row in _native():
    if row["family"] not in ("wide_resnet", "dm_wide_resnet"):
      continue
    opts = {k: v for k, v in row["options"].items() if k not in ("depth", "widen_factor", "width")}
    silu = "nn.SiLU" in row["model"]   # torch's SiLU, not RobustBench's Swish: same options
    out.setdefault((row["family"], repr(sorted(opts.items())), row["dataset"], silu), row)
  return sorted(out.values(), key=lambda r: (r["dataset"], r["name"]))


VARIANTS = _variants()


def test_variants_cover_the_families():
  names = {r["name"] for r in VARIANTS}
  for expected in ("Carmon2019Unlabeled", "Hendrycks2019Using", "Rice2020Overfitting",
                   "Ding2020MMA", "Gowal2020Uncovering_70_16", "Wang2023Better_WRN-28-10",
                   "Wu2020Adversarial"):
    assert expected in names, expected
  assert len(VARIANTS) >= 10


@pytest.mark.parametrize("row", VARIANTS, ids=lambda r: f"{r['dataset']}-{r['name']}")
def test_small_variant_logits_equal_robustbench_module(row, tmp_path):
  sizes = (dict(depth=10, widen_factor=1) if row["family"] == "wide_resnet"
           else dict(depth=10, width=1))
  module = robustbench_torch.module(row, **sizes)
  T.randomize(module, seed=7)
  path = tmp_path / "small.pt"
  torch.save({k: v for k, v in module.state_dict().items() if k not in NORM_BUFFERS}, path)
  net, _, _ = porting.convert(_key(row), path, **sizes)
  x = np.random.default_rng(2).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    ref = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  diff = float(np.abs(np.asarray(net(jnp.asarray(x))) - ref).max())
  scale = float(np.abs(ref).max())
  print(f"{row['name']}: max|diff| {diff:.2e}, max|logit| {scale:.2f}, relative {diff / scale:.1e}")
  assert diff <= RTOL * scale


def test_dm_preact_resnet18_logits_equal_robustbench_module(tmp_path):
  """Rebuffi2021Fixing_R18_ddpm (CIFAR-100): RobustBench's DMPreActResNet, whose projection
  shortcut is a 3x3 conv of the padded raw input."""
  row = next(r for r in zoo.robustbench_rows() if (r["name"], r["dataset"]) ==
             ("Rebuffi2021Fixing_R18_ddpm", "cifar100"))
  module = T.randomize(T.robustbench_zoo("cifar100", "linf")[row["name"]](), seed=9)
  path = tmp_path / "r18.pt"
  torch.save(module.state_dict(), path)
  net, _, _ = porting.convert(_key(row), path)
  x = np.random.default_rng(4).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    ref = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  diff = float(np.abs(np.asarray(net(jnp.asarray(x))) - ref).max())
  print(f"{row['name']}: max|diff| {diff:.2e}, max|logit| {np.abs(ref).max():.2f}")
  assert diff <= RTOL * float(np.abs(ref).max())
