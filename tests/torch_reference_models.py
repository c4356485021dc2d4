"""Small PyTorch definitions of the zoo architectures, written for the parity tests.

Their parameter names and shapes are those of the public checkpoints (RobustBench
`wide_resnet.py`, `dm_wide_resnet.py`, `resnet.py`; Cohen et al.'s `cifar_resnet.py`;
torchvision's ResNet; TRADES' SmallCNN). Input normalization that is not part of a checkpoint
is applied outside the state_dict, as the zoos do.

`robustbench_architecture` and `robustbench_zoo` load RobustBench's own code instead (the
`robustbench` package, installed without its dependencies): see their docstrings.
"""
import ast
import collections
import functools
import importlib.metadata
import importlib.util
import math
import pathlib

import torch
import torch.nn.functional as F
from torch import nn


def conv(i, o, k, s=1, p=0, bias=False):
  return nn.Conv2d(i, o, k, stride=s, padding=p, bias=bias)


class WRNBlock(nn.Module):
  def __init__(self, i, o, s):
    super().__init__()
    self.bn1, self.conv1 = nn.BatchNorm2d(i), conv(i, o, 3, s, 1)
    self.bn2, self.conv2 = nn.BatchNorm2d(o), conv(o, o, 3, 1, 1)
    self.equal = i == o
    self.convShortcut = None if self.equal else conv(i, o, 1, s, 0)

  def forward(self, x):
    a = F.relu(self.bn1(x))
    out = self.conv2(F.relu(self.bn2(self.conv1(a))))
    return (x if self.equal else self.convShortcut(a)) + out


class WRNGroup(nn.Module):
  def __init__(self, n, i, o, s):
    super().__init__()
    self.layer = nn.Sequential(*[WRNBlock(i if j == 0 else o, o, s if j == 0 else 1) for j in range(n)])

  def forward(self, x):
    return self.layer(x)


class WideResNet(nn.Module):
  def __init__(self, depth=28, widen_factor=10, num_classes=10, sub_block1=False, per_image=False):
    super().__init__()
    n, ch = (depth - 4) // 6, [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    self.per_image = per_image
    self.conv1 = conv(3, 16, 3, 1, 1)
    self.block1 = WRNGroup(n, ch[0], ch[1], 1)
    if sub_block1:
      self.sub_block1 = WRNGroup(n, ch[0], ch[1], 1)
    self.block2, self.block3 = WRNGroup(n, ch[1], ch[2], 2), WRNGroup(n, ch[2], ch[3], 2)
    self.bn1, self.fc = nn.BatchNorm2d(ch[3]), nn.Linear(ch[3], num_classes)

  def forward(self, x):
    if self.per_image:   # Ding2020MMANet.forward
      mu, sd = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True)
      x = (x - mu) / torch.max(sd, torch.ones_like(sd) / math.prod(x.shape[1:]) ** .5)
    out = self.block3(self.block2(self.block1(self.conv1(x))))
    out = F.avg_pool2d(F.relu(self.bn1(out)), 8)
    return self.fc(out.flatten(1))


class DMBlock(nn.Module):
  def __init__(self, i, o, s):
    super().__init__()
    self.batchnorm_0, self.conv_0 = nn.BatchNorm2d(i), conv(i, o, 3, s, 0)
    self.batchnorm_1, self.conv_1 = nn.BatchNorm2d(o), conv(o, o, 3, 1, 1)
    self.has_shortcut, self.stride = i != o, s
    self.shortcut = conv(i, o, 1, s, 0) if self.has_shortcut else None

  def forward(self, x):
    a = F.silu(self.batchnorm_0(x))
    v = F.pad(a, (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1))
    out = self.conv_1(F.silu(self.batchnorm_1(self.conv_0(v))))
    return (self.shortcut(a) if self.has_shortcut else x) + out


class DMGroup(nn.Module):
  def __init__(self, n, i, o, s):
    super().__init__()
    self.block = nn.Sequential(*[DMBlock(i if j == 0 else o, o, s if j == 0 else 1) for j in range(n)])

  def forward(self, x):
    return self.block(x)


class DMWideResNet(nn.Module):
  def __init__(self, num_classes=10, depth=28, width=10, mean=(0.4914, 0.4822, 0.4465),
               std=(0.2471, 0.2435, 0.2616)):
    super().__init__()
    # Non-persistent, as RobustBench's dm_wide_resnet.py: the state_dict has no mean/std.
    self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
    self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)
    n, ch = (depth - 4) // 6, [16, 16 * width, 32 * width, 64 * width]
    self.init_conv = conv(3, 16, 3, 1, 1)
    self.layer = nn.Sequential(*[DMGroup(n, ch[i], ch[i + 1], 1 if i == 0 else 2) for i in range(3)])
    self.batchnorm, self.logits = nn.BatchNorm2d(ch[3]), nn.Linear(ch[3], num_classes)

  def forward(self, x):
    out = self.layer(self.init_conv((x - self.mean) / self.std))
    out = F.avg_pool2d(F.silu(self.batchnorm(out)), 8)
    return self.logits(out.flatten(1))


def _projection(i, o, s):
  return nn.Sequential(conv(i, o, 1, s), nn.BatchNorm2d(o))


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, i, p, s):
    super().__init__()
    self.conv1, self.bn1 = conv(i, p, 3, s, 1), nn.BatchNorm2d(p)
    self.conv2, self.bn2 = conv(p, p, 3, 1, 1), nn.BatchNorm2d(p)
    self.shortcut = _projection(i, p, s) if s != 1 or i != p else nn.Sequential()

  def forward(self, x):
    out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, i, p, s, shortcut_name="shortcut"):
    super().__init__()
    self.conv1, self.bn1 = conv(i, p, 1), nn.BatchNorm2d(p)
    self.conv2, self.bn2 = conv(p, p, 3, s, 1), nn.BatchNorm2d(p)
    self.conv3, self.bn3 = conv(p, 4 * p, 1), nn.BatchNorm2d(4 * p)
    self.shortcut_name = shortcut_name
    proj = _projection(i, 4 * p, s) if s != 1 or i != 4 * p else None
    if proj is not None or shortcut_name == "shortcut":
      setattr(self, shortcut_name, proj if proj is not None else nn.Sequential())

  def forward(self, x):
    out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
    out = self.bn3(self.conv3(out))
    proj = getattr(self, self.shortcut_name, None)
    return F.relu(out + (x if proj is None else proj(x)))


class PreActBlock(nn.Module):
  expansion = 1

  def __init__(self, i, p, s):
    super().__init__()
    self.bn1, self.conv1 = nn.BatchNorm2d(i), conv(i, p, 3, s, 1)
    self.bn2, self.conv2 = nn.BatchNorm2d(p), conv(p, p, 3, 1, 1)
    if s != 1 or i != p:
      self.shortcut = nn.Sequential(conv(i, p, 1, s))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    sc = self.shortcut(x) if hasattr(self, "shortcut") else x
    return self.conv2(F.relu(self.bn2(self.conv1(out)))) + sc


def _stages(module, block, blocks, width, **kw):
  i = width
  for n_stage, n in enumerate(blocks):
    p, layers = width * 2 ** n_stage, []
    for j in range(n):
      layers.append(block(i, p, (1 if n_stage == 0 else 2) if j == 0 else 1, **kw))
      i = p * block.expansion
    setattr(module, f"layer{n_stage + 1}", nn.Sequential(*layers))
  return i


class ResNet(nn.Module):
  def __init__(self, blocks=(2, 2, 2, 2), num_classes=10, bottleneck=False, base_width=64):
    super().__init__()
    self.conv1, self.bn1 = conv(3, base_width, 3, 1, 1), nn.BatchNorm2d(base_width)
    out = _stages(self, Bottleneck if bottleneck else BasicBlock, blocks, base_width)
    self.linear = nn.Linear(out, num_classes)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class PreActResNet(nn.Module):
  def __init__(self, blocks=(2, 2, 2, 2), num_classes=10, base_width=64):
    super().__init__()
    self.conv1 = conv(3, base_width, 3, 1, 1)
    out = _stages(self, PreActBlock, blocks, base_width)
    self.linear = nn.Linear(out, num_classes)

  def forward(self, x):
    out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
    return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class ImageNetResNet(nn.Module):
  def __init__(self, blocks=(3, 4, 6, 3), num_classes=1000, base_width=64):
    super().__init__()
    self.conv1, self.bn1 = conv(3, base_width, 7, 2, 3), nn.BatchNorm2d(base_width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    out = _stages(self, Bottleneck, blocks, base_width, shortcut_name="downsample")
    self.fc = nn.Linear(out, num_classes)

  def forward(self, x):
    out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class CohenBlock(nn.Module):
  def __init__(self, i, p, s):
    super().__init__()
    self.conv1, self.bn1 = conv(i, p, 3, s, 1), nn.BatchNorm2d(p)
    self.conv2, self.bn2 = conv(p, p, 3, 1, 1), nn.BatchNorm2d(p)
    self.downsample = _projection(i, p, s) if s != 1 or i != p else None

  def forward(self, x):
    out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
  def __init__(self, depth=110, num_classes=10):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1, self.bn1 = conv(3, 16, 3, 1, 1), nn.BatchNorm2d(16)
    i = 16
    for k, p in enumerate((16, 32, 64)):
      blocks = []
      for j in range(n):
        blocks.append(CohenBlock(i, p, 2 if k > 0 and j == 0 else 1))
        i = p
      setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
    self.fc = nn.Linear(64, num_classes)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer3(self.layer2(self.layer1(out)))
    return self.fc(F.avg_pool2d(out, 8).flatten(1))


class CohenNormalize(nn.Module):
  """Cohen et al.'s NormalizeLayer: mean/std are attributes, not state_dict entries."""

  def __init__(self, mean, std):
    super().__init__()
    self.means, self.sds = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

  def forward(self, x):
    return (x - self.means) / self.sds


class SmallCNN(nn.Module):
  def __init__(self, num_classes=10, in_channels=1):
    super().__init__()
    self.feature_extractor = nn.Sequential()
    for name, (i, o) in zip(("conv1", "conv2", "conv3", "conv4"), ((in_channels, 32), (32, 32), (32, 64), (64, 64))):
      self.feature_extractor.add_module(name, nn.Conv2d(i, o, 3))
    self.classifier = nn.Sequential()
    for name, (i, o) in zip(("fc1", "fc2", "fc3"), ((1024, 200), (200, 200), (200, num_classes))):
      self.classifier.add_module(name, nn.Linear(i, o))

  def forward(self, x):
    f = self.feature_extractor
    x = F.max_pool2d(F.relu(f.conv2(F.relu(f.conv1(x)))), 2)
    x = F.max_pool2d(F.relu(f.conv4(F.relu(f.conv3(x)))), 2)
    c = self.classifier
    return c.fc3(F.relu(c.fc2(F.relu(c.fc1(x.flatten(1))))))


class MLP(nn.Module):
  def __init__(self, in_features=2, hidden=(64, 64, 64), num_classes=3):
    super().__init__()
    widths = [in_features, *hidden]
    self.hidden = nn.ModuleList([nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])])
    self.head = nn.Linear(widths[-1], num_classes)

  def forward(self, x):
    x = x.flatten(1)
    for layer in self.hidden:
      x = F.relu(layer(x))
    return self.head(x)


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights and non-trivial BN statistics (so eval-mode BN is really exercised)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        fan_in = m.weight[0].numel()
        # Gain 1 rather than He: keeps logits O(10) in deep residual stacks, like trained nets.
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
      elif isinstance(m, nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=g))
        m.bias.copy_(torch.randn(c, generator=g) * 0.2)
        m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
        m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
        m.num_batches_tracked.fill_(1000)
  return module.eval()


# RobustBench's own code. `import robustbench` imports timm and torchvision (its __init__ loads
# data.py and utils.py), which this environment does not have, so nothing is imported through
# the package: the architecture files, which import only torch, load by path, and the model
# zoo files (model_zoo/cifar10.py, cifar100.py; timm at the top) are read as source. Their
# classes and their per-name constructors are executed against the architecture modules they
# import; a name whose code needs a module that does not load here (timm, torchvision, ...)
# raises NameError when asked for, never a substitute.
RB_ARCHITECTURES = ("dm_wide_resnet", "wide_resnet", "resnet", "utils_architectures")


def robustbench_dir() -> pathlib.Path:
  """The installed ``robustbench`` package folder (PackageNotFoundError if not installed)."""
  return pathlib.Path(importlib.metadata.distribution("robustbench").locate_file("robustbench"))


@functools.cache
def robustbench_architecture(name: str):
  """robustbench/model_zoo/architectures/<name>.py, loaded by path as a module."""
  path = robustbench_dir() / "model_zoo" / "architectures" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"robustbench_by_path_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _zoo_namespace(tree) -> dict:
  """torch, nn and the names the zoo file imports from `RB_ARCHITECTURES`."""
  ns = {"torch": torch, "nn": nn, "F": F, "OrderedDict": collections.OrderedDict}
  prefix = "robustbench.model_zoo.architectures."
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix):
      arch = node.module[len(prefix):]
      if arch in RB_ARCHITECTURES:
        module = robustbench_architecture(arch)
        ns.update({a.asname or a.name: getattr(module, a.name) for a in node.names})
  return ns


@functools.cache
def robustbench_zoo_source(dataset: str = "cifar10"):
  """(parsed model_zoo/<dataset>.py, namespace holding its classes), `dataset` cifar10/cifar100.

  The namespace has torch, nn, the names the file imports from `RB_ARCHITECTURES` and every
  class the file defines whose base classes load here (e.g. ``Ding2020MMANet``,
  ``Wong2020FastNet``); the others are absent, so using them raises NameError.
  """
  tree = ast.parse((robustbench_dir() / "model_zoo" / f"{dataset}.py").read_text())
  ns = _zoo_namespace(tree)
  for node in tree.body:
    if isinstance(node, ast.ClassDef):
      try:
        code = compile(ast.Module([node], []), f"{dataset}.py", "exec")
        exec(code, ns)  # pylint: disable=exec-used
      except NameError:
        pass   # a base class from a module that does not load here: the class stays absent
  return tree, ns


@functools.cache
def robustbench_zoo(dataset: str = "cifar10", threat_model: str = "linf") -> dict:
  """name -> RobustBench's own constructor of that model (its ``'model'`` entry, no arguments).

  Args:
    dataset: ``cifar10`` or ``cifar100`` (model_zoo/<dataset>.py).
    threat_model: the module-level OrderedDict of that file (``linf``, ``l2``).
  """
  tree, ns = robustbench_zoo_source(dataset)
  (table,) = [n.value for n in tree.body if isinstance(n, ast.Assign)
              and [t.id for t in n.targets if isinstance(t, ast.Name)] == [threat_model]]
  out = {}
  for item in table.args[0].elts:
    name, spec = ast.literal_eval(item.elts[0]), item.elts[1]
    expr = spec.values[[ast.literal_eval(k) for k in spec.keys].index("model")]
    out[name] = _constructor(name, ast.Expression(expr), dataset, ns)
  return out


def _constructor(name, expr, dataset, ns):
  def build():
    try:
      factory = eval(compile(expr, f"{dataset}.py", "eval"), ns)  # pylint: disable=eval-used
      return factory()
    except NameError as e:
      raise NameError(f"RobustBench's {name} needs {e.name}, from a module that does not "
                      f"load without its dependencies") from None
  return build
