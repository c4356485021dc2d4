"""RobustBench's model zoo read from its source: name -> architecture, options, download ids.

    rows = robustbench_zoo.parse()            # from the installed `robustbench` package
    robustbench_zoo.write(rows)               # regenerates jax_abstain/models/robustbench_table.json

`import robustbench` pulls in timm and torchvision, so the zoo files
(``robustbench/model_zoo/cifar10.py``, ``cifar100.py``) are parsed with `ast`, never imported:
each ``OrderedDict`` entry gives a name, its ``'model'`` constructor (a lambda, a function of
``model_zoo/architectures`` or a class of the zoo file) and its ``'gdrive_id'``. A constructor
is followed through RobustBench's signatures (read from ``architectures/*.py``) down to one of
the architectures that `jax_abstain.models` builds, with its options and input normalisation
(the ``mu``/``sigma`` buffers of a zoo class, ``2x - 1``, per-image standardisation, the
DeepMind ``mean``/``std``). Anything else (an ensemble, a timm model, an unknown block, a
``forward`` that does more than normalise) gets a reason instead of an architecture: it is
listed, never built approximately.

The table shipped with the package (``jax_abstain/models/robustbench_table.json``) is this module's
output for robustbench 1.1.1; ``tests/robustbench_load_test.py`` checks that they agree.
"""
import ast
import dataclasses
import importlib.metadata
import json
import pathlib

# The leaderboards covered (module-level OrderedDicts of each zoo file).
TABLES = (("cifar10", "Linf", "linf"), ("cifar10", "L2", "l2"), ("cifar100", "Linf", "linf"))
ARCH_FILES = ("wide_resnet", "dm_wide_resnet", "resnet")
ACTIVATIONS = {"Swish": "swish", "nn.SiLU": "swish", "nn.ReLU": "relu"}
BLOCKS = ("BasicBlock", "Bottleneck", "PreActBlock", "PreActBlockV2",
          "BottleneckChen2020AdversarialNet")
# RobustBench's load_model takes ``checkpoint['last']`` for these (robustbench/utils.py).
LAST_KEY = ("Kireev2021Effectiveness", "Andriushchenko2020Understanding")


class Unsupported(Exception):
  """The entry's architecture is not one the Flax zoo builds (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Row:
  """One leaderboard entry. `family` is "" when `reason` says why it is not built."""
  dataset: str
  threat_model: str
  name: str
  gdrive_ids: tuple
  model: str           # RobustBench's constructor, as written in its zoo file
  family: str
  options: dict        # constructor options of the Flax architecture (normalisation included)
  normalization: str   # human-readable
  checkpoint_key: str  # "" or the key of the checkpoint dict holding the weights
  reason: str


def robustbench_dir():
  """The installed robustbench package folder, or None."""
  try:
    return pathlib.Path(importlib.metadata.distribution("robustbench").locate_file("robustbench"))
  except importlib.metadata.PackageNotFoundError:
    return None


def robustbench_version():
  try:
    return importlib.metadata.version("robustbench")
  except importlib.metadata.PackageNotFoundError:
    return None


def _signature(fn: ast.FunctionDef) -> tuple:
  """(parameter names without self, {name: default node})."""
  args = [a.arg for a in fn.args.args if a.arg != "self"]
  defaults = dict(zip(args[len(args) - len(fn.args.defaults):], fn.args.defaults))
  return args, defaults


def _architectures(root) -> tuple:
  """({callable: (params, defaults, returned call or None)}, {constant: value})."""
  calls, consts = {}, {}
  for name in ARCH_FILES:
    tree = ast.parse((root / "model_zoo" / "architectures" / f"{name}.py").read_text())
    for node in tree.body:
      if isinstance(node, ast.ClassDef):
        init = [f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
        if init:
          calls[node.name] = (*_signature(init[0]), None)
      elif isinstance(node, ast.FunctionDef) and isinstance(node.body[-1], ast.Return):
        calls[node.name] = (*_signature(node), node.body[-1].value)
      elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        try:
          consts[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
          pass
  return calls, consts


def _value(node, env: dict):
  """The value of an argument expression (literals, names of `env`, activations, blocks)."""
  text = ast.unparse(node)
  if text in ACTIVATIONS:
    return ACTIVATIONS[text]
  if text in BLOCKS:
    return text
  if isinstance(node, ast.Name):
    if node.id in env:
      return env[node.id]
    raise Unsupported(f"argument {text}")
  if isinstance(node, (ast.Tuple, ast.List)):
    return tuple(_value(e, env) for e in node.elts)
  try:
    return ast.literal_eval(node)
  except ValueError:
    raise Unsupported(f"argument {text}") from None


def _bind(params, defaults, call: ast.Call, env: dict) -> dict:
  bound = {p: _value(d, env) for p, d in defaults.items()}
  bound.update({p: _value(a, env) for p, a in zip(params, call.args)})
  bound.update({k.arg: _value(k.value, env) for k in call.keywords})
  return bound


def _mean_std(mean, std) -> tuple:
  mean = tuple(float(v) for v in (mean if isinstance(mean, tuple) else (mean,) * 3))
  std = tuple(float(v) for v in (std if isinstance(std, tuple) else (std,) * 3))
  return dict(mean=mean, std=std)


def _family(name: str, a: dict) -> tuple:
  """(family, options) of the Flax architecture for RobustBench's `name` with arguments `a`."""
  if name == "WideResNet":
    return "wide_resnet", dict(depth=a["depth"], widen_factor=a["widen_factor"],
                               sub_block1=a["sub_block1"], bias_last=a["bias_last"],
                               num_classes=a["num_classes"])
  if name == "DMWideResNet":
    if a["num_input_channels"] != 3:
      raise Unsupported(f"DMWideResNet with {a['num_input_channels']} input channels")
    return "dm_wide_resnet", dict(depth=a["depth"], width=a["width"],
                                  activation=a["activation_fn"], padding=a["padding"],
                                  num_classes=a["num_classes"], **_mean_std(a["mean"], a["std"]))
  if name == "DMPreActResNet" and a["depth"] in (18, 34) and a["width"] == 0:
    if a["num_input_channels"] != 3:
      raise Unsupported(f"DMPreActResNet with {a['num_input_channels']} input channels")
    return "dm_preact_resnet", dict(depth=a["depth"], activation=a["activation_fn"],
                                    padding=a["padding"], num_classes=a["num_classes"],
                                    **_mean_std(a["mean"], a["std"]))
  if name == "ResNet" and a["block"] in ("BasicBlock", "Bottleneck"):
    return "resnet", dict(blocks=tuple(a["num_blocks"]), bottleneck=a["block"] == "Bottleneck",
                          num_classes=a["num_classes"])
  if (name == "PreActResNet" and a["block"] == "PreActBlock" and not a["bn_before_fc"]
      and not a["out_shortcut"]):
    return "preact_resnet", dict(blocks=tuple(a["num_blocks"]), num_classes=a["num_classes"])
  shown = ", ".join(f"{k}={v}" for k, v in a.items() if k in ("block", "bn_before_fc",
                                                              "out_shortcut"))
  raise Unsupported(f"{name}({shown})" if shown else name)


def _resolve(call: ast.Call, calls: dict, env: dict) -> tuple:
  """Follows `call` through RobustBench's functions to (architecture name, bound arguments)."""
  name = ast.unparse(call.func)
  if name not in calls:
    raise Unsupported(name)
  params, defaults, returned = calls[name]
  bound = _bind(params, defaults, call, env)
  if returned is not None:
    return _resolve(returned, calls, {**env, **bound})
  return name, bound


def _buffer(call: ast.Call) -> tuple:
  """The values of ``register_buffer('mu', torch.tensor([...]).view(...))``."""
  for node in ast.walk(call.args[1]):
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.tensor":
      return tuple(float(v) for v in ast.literal_eval(node.args[0]))
  raise Unsupported(f"buffer {ast.unparse(call)}")


def _forward_normalization(forward: ast.FunctionDef, buffers: dict) -> dict:
  """The normalisation a zoo class's ``forward`` applies before its base class's."""
  statements = [ast.unparse(s) for s in forward.body]
  if not statements[-1].startswith("return super"):
    raise Unsupported("a forward that is not its base class's")
  body = [s for s in statements[:-1]]
  if body == ["x = (x - self.mu) / self.sigma"] and {"mu", "sigma"} <= set(buffers):
    return _mean_std(buffers["mu"], buffers["sigma"])
  if body == ["x = 2.0 * x - 1.0"]:
    return _mean_std(0.5, 0.5)
  if any("x.std(dim=(1, 2, 3), keepdim=True)" in s for s in body) and len(body) == 4:
    return dict(normalization="per_image")
  raise Unsupported("a forward with its own preprocessing")


def _zoo_class(node: ast.ClassDef, calls: dict, env: dict) -> tuple:
  """(architecture, arguments, normalisation) of a class of the zoo file."""
  base = ast.unparse(node.bases[0]) if node.bases else ""
  methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
  if base not in calls or "__init__" not in methods or "forward" not in methods:
    raise Unsupported(f"{node.name} (a {base or 'custom'} module)")
  params, defaults = _signature(methods["__init__"])
  local = {**env, **{p: _value(d, env) for p, d in defaults.items()}}
  buffers, arch = {}, None
  for stmt in ast.walk(methods["__init__"]):
    if not isinstance(stmt, ast.Call):
      continue
    func = ast.unparse(stmt.func)
    if func.startswith("super") and func.endswith("__init__"):
      arch = _resolve(ast.Call(ast.Name(base), stmt.args, stmt.keywords), calls, local)
    elif func == "self.register_buffer":
      buffers[ast.literal_eval(stmt.args[0])] = _buffer(stmt)
  if arch is None or len(params) and any(p not in defaults for p in params):
    raise Unsupported(node.name)
  return (*arch, _forward_normalization(methods["forward"], buffers))


def _describe(norm: dict) -> str:
  if norm.get("normalization") == "per_image":
    return "per-image standardisation"
  if not norm or (set(norm["mean"]) == {0.0} and set(norm["std"]) == {1.0}):
    return "none (inputs in [0,1])"
  fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
  return f"mean {fmt(norm['mean'])}, std {fmt(norm['std'])}"


def _entry(name, model: ast.expr, classes: dict, calls: dict, env: dict) -> tuple:
  """(family, options, normalisation text) of one zoo entry, or raises Unsupported."""
  if isinstance(model, ast.Lambda):
    model = model.body
  if isinstance(model, ast.Name):
    model = ast.Call(model, [], [])
  if not isinstance(model, ast.Call):
    raise Unsupported(ast.unparse(model))
  func = ast.unparse(model.func)
  if func in classes:
    if model.args or model.keywords:
      raise Unsupported(f"{func} with arguments")
    arch, args, norm = _zoo_class(classes[func], calls, env)
  else:
    arch, args = _resolve(model, calls, env)
    norm = {}
  family, options = _family(arch, args)
  if family in ("dm_wide_resnet", "dm_preact_resnet"):
    norm = {k: options[k] for k in ("mean", "std")}
  return family, {**options, **norm}, _describe(norm)


def _table_entries(tree, attr: str):
  """(name, {'model': node, 'gdrive_id': node}) of the zoo file's OrderedDict `attr`."""
  (table,) = [n.value for n in tree.body if isinstance(n, ast.Assign)
              and [getattr(t, "id", None) for t in n.targets] == [attr]]
  for item in table.args[0].elts:
    spec = item.elts[1]
    yield ast.literal_eval(item.elts[0]), {ast.literal_eval(k): v
                                            for k, v in zip(spec.keys, spec.values)}


def parse(root=None) -> list:
  """The `Row`s of the leaderboards in `TABLES`, from robustbench's source under `root`
  (default: the installed package; FileNotFoundError when it is not installed)."""
  root = pathlib.Path(root) if root else robustbench_dir()
  if root is None:
    raise FileNotFoundError("robustbench is not installed")
  calls, consts = _architectures(root)
  rows = []
  for dataset, threat, attr in TABLES:
    source = (root / "model_zoo" / f"{dataset}.py").read_text()
    tree = ast.parse(source)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for name, spec in _table_entries(tree, attr):
      ids = ast.literal_eval(spec["gdrive_id"])
      ids = () if ids is None else tuple(ids) if isinstance(ids, list) else (ids,)
      model = ast.get_source_segment(source, spec["model"])
      family, options, norm, reason = "", {}, "", ""
      try:
        if len(ids) != 1:
          raise Unsupported("an ensemble of several checkpoints" if ids else
                            "a timm model (no checkpoint id)")
        family, options, norm = _entry(name, spec["model"], classes, calls, consts)
      except Unsupported as e:
        reason = str(e)
      key = "last" if any(name.startswith(p) for p in LAST_KEY) else ""
      rows.append(Row(dataset, threat, name, ids, " ".join(model.split()), family, options,
                      norm, key, reason))
  return rows


def render(rows, version) -> str:
  """The text of ``jax_abstain/models/robustbench_table.json`` for `rows`: one JSON row per
  line, in the order of `Row`'s fields."""
  lines = [json.dumps(dataclasses.astuple(r)) for r in rows]
  fields = json.dumps([f.name for f in dataclasses.fields(Row)])
  return ('{"generated_by": "jax_abstain.porting.robustbench_zoo.write", '
          f'"robustbench_version": {json.dumps(version)},\n "fields": {fields},\n "rows": [\n  '
          + ",\n  ".join(lines) + "\n]}\n")


def write(rows=None, path=None) -> pathlib.Path:
  """Regenerates the shipped table from the installed robustbench (or `rows`)."""
  rows = parse() if rows is None else rows
  path = pathlib.Path(path or pathlib.Path(__file__).parents[1] / "models"
                      / "robustbench_table.json")
  path.write_text(render(rows, robustbench_version()))
  return path
