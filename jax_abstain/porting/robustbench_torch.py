"""RobustBench's own PyTorch module of a leaderboard entry, for the parity check of a port.

    module = robustbench_torch.module(row)          # None when robustbench is not installed
    module.load_state_dict(...); module(x)          # NCHW logits, as RobustBench evaluates

`import robustbench` imports timm and torchvision, which the package does not need, so nothing
is imported through it: the architecture files (``model_zoo/architectures/wide_resnet.py``,
``dm_wide_resnet.py``, ``resnet.py``; they import only torch) load by path, the zoo file's
classes (``Rice2020OverfittingNet``, ...) are executed against them, and the entry's
``'model'`` expression (`robustbench_zoo.Row.model`) is evaluated in that namespace.
"""
import ast
import collections
import functools
import importlib.util

from jax_abstain.porting import robustbench_zoo

# Architecture overrides that tests use to build small variants of an entry (RobustBench's
# WideResNet and DMWideResNet take these keyword arguments, as the Flax ones do).
SIZE_OPTIONS = ("depth", "widen_factor", "width")


@functools.cache
def _architecture(root, name: str):
  path = root / "model_zoo" / "architectures" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"jax_abstain_robustbench_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@functools.cache
def _namespace(root, dataset: str) -> dict:
  """torch, nn, the zoo file's imports from `robustbench_zoo.ARCH_FILES` and its classes."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  tree = ast.parse((root / "model_zoo" / f"{dataset}.py").read_text())
  ns = {"torch": torch, "nn": nn, "OrderedDict": collections.OrderedDict}
  prefix = "robustbench.model_zoo.architectures."
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix):
      if node.module[len(prefix):] in robustbench_zoo.ARCH_FILES:
        arch = _architecture(root, node.module[len(prefix):])
        ns.update({a.asname or a.name: getattr(arch, a.name) for a in node.names})
  for node in tree.body:
    if isinstance(node, ast.ClassDef):
      try:
        exec(compile(ast.Module([node], []), f"{dataset}.py", "exec"), ns)  # pylint: disable=exec-used
      except NameError:
        pass   # a base class from a file that is not loaded (timm, ...): not a native entry
  return ns


def module(row: dict, **sizes):
  """RobustBench's module for `row` (a native entry) in eval mode, or None without robustbench.

  Args:
    row: a table row (`jax_abstain.models.zoo.robustbench_rows`).
    **sizes: `SIZE_OPTIONS` overriding the entry's (small test variants).
  """
  root = robustbench_zoo.robustbench_dir()
  if root is None:
    return None
  expr = ast.parse(row["model"], mode="eval").body
  if isinstance(expr, ast.Lambda):
    expr = expr.body
  call = expr if isinstance(expr, ast.Call) else ast.Call(expr, [], [])
  keywords = [k for k in call.keywords if k.arg not in sizes]
  keywords += [ast.keyword(k, ast.Constant(v)) for k, v in sizes.items()]
  call = ast.fix_missing_locations(ast.Expression(ast.Call(call.func, call.args, keywords)))
  net = eval(compile(call, f"{row['dataset']}.py", "eval"), _namespace(root, row["dataset"]))  # pylint: disable=eval-used
  return net.eval()


def load_like_robustbench(net, checkpoint) -> None:
  """Loads a ``torch.load`` result into `net` as RobustBench's ``load_model`` does
  (robustbench/utils.py): the ``'last'``/``'state_dict'`` entry, ``module.`` and ``model.``
  prefixes removed; only normalisation buffers may be missing (its known failures).

  Raises:
    RuntimeError: other missing or unexpected keys.
  """
  for key in ("last", "state_dict"):
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
      checkpoint = checkpoint[key]
      break
  state_dict = {}
  for k, v in checkpoint.items():
    for prefix in ("module.", "model."):
      k = k[len(prefix):] if k.startswith(prefix) else k
    state_dict[k] = v
  result = net.load_state_dict(state_dict, strict=False)
  missing = set(result.missing_keys) - {"mu", "sigma", "mean", "std"}
  if missing or result.unexpected_keys:
    raise RuntimeError(f"missing {sorted(missing)[:5]}, unexpected "
                       f"{sorted(result.unexpected_keys)[:5]}")
