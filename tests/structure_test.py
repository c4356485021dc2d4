"""The layout rules of docs/design.md ("Layers"), read from the source (AST, no imports):
imports point one way, modules <= 400 lines, functions <= 60 lines outside the attack kernels,
command lines only in jax_abstain/cli/, no import side effects, docstrings cite only files of
the repository."""
import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jax_abstain"

# docs/design.md, "Layers": the layer of each top-level module or subpackage of jax_abstain.
# A module may import its own layer and the layers below it, never a layer above.
LAYERS = {
    0: ("errors", "radii", "validation", "files", "download", "xla_cpu", "devices", "preemption"),
    1: ("losses", "attacks", "smoothing", "models", "porting", "data", "metrics", "soundness",
        "reports", "ibp"),
    2: ("selectors", "compose", "cascades"),
    3: ("evaluation", "training", "analysis"),
    4: ("jobs", "configs"),
    5: ("cli", "main"),
}
# The package root (jax_abstain/__init__.py: __version__, lazy access to the subpackages,
# use_eigen_convolutions) is imported with any of its modules anyway; it stands outside the
# layers.
ROOT_UNIT = "__init__"
LAYER = {unit: layer for layer, units in LAYERS.items() for unit in units}
# Layer 3 holds three packages that do not import each other, except these (importer module,
# imported module), each named in docs/design.md ("Layers").
SIBLINGS = ("evaluation", "training", "analysis")
SIBLING_ALLOWANCES = set()

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# The attack kernels: one jitted loop each, kept whole so that it reads like the published
# algorithm (docs/design.md).
KERNELS = {
    ("attacks/apgd.py", "apgd_single_run"),
    ("attacks/autoattack.py", "autoattack_run"),
    ("attacks/square.py", "square_run"),
    ("attacks/pgd.py", "pgd"),
    ("attacks/multi_radius.py", "robust_at_radii"),
}
COMMAND_LINE_PLACES = ("cli/", "main.py")
# Citations of files that are not in the repository.
STALE_CITATION = re.compile(
    r"DESIGN\.md|reference\s+(file|section)|\(reference[\s,)]|reference\s+\d[a-z]?\b")


def _modules():
  return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path) -> str:
  return path.relative_to(PACKAGE).as_posix()


def _dotted(path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(dotted: str) -> str:
  parts = dotted.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def _imports(path):
  """The jax_abstain modules a file imports (anywhere in it), as dotted names; for ``from X
  import y`` both X.y (if y is a module) and X are candidates, the deepest existing one wins."""
  tree = ast.parse(path.read_text(), str(path))
  package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rsplit(".", 1)[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] == "jax_abstain":
          yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      if base.split(".")[0] != "jax_abstain":
        continue
      for alias in node.names:
        candidate = f"{base}.{alias.name}"
        is_module = (ROOT / (candidate.replace(".", "/") + ".py")).exists() or \
            (ROOT / candidate.replace(".", "/") / "__init__.py").exists()
        yield node.lineno, candidate if is_module else base


def test_every_module_has_a_layer():
  units = {_unit(_dotted(p)) for p in _modules()} - {ROOT_UNIT}
  assert units <= set(LAYER), f"modules without a layer in docs/design.md: {units - set(LAYER)}"


def test_imports_point_down():
  wrong = []
  for path in _modules():
    importer = _dotted(path)
    for line, imported in _imports(path):
      a, b = _unit(importer), _unit(imported)
      if a == b or ROOT_UNIT in (a, b):
        continue
      if LAYER[b] > LAYER[a]:
        wrong.append(f"{_rel(path)}:{line}: layer {LAYER[a]} ({a}) imports {imported} "
                     f"(layer {LAYER[b]})")
      elif a in SIBLINGS and b in SIBLINGS and (importer, imported) not in SIBLING_ALLOWANCES:
        wrong.append(f"{_rel(path)}:{line}: {a} imports its layer-3 sibling {imported}")
  assert not wrong, "\n".join(wrong)


def test_module_sizes():
  big = {_rel(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
  assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def _functions(tree):
  """(qualified name, top-level name, lines) of every function, nested ones included."""
  def walk(node, prefix, top):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
        name = f"{prefix}{child.name}"
        first = min([child.lineno] + [d.lineno for d in child.decorator_list])
        yield name, top or child.name, child.end_lineno - first + 1
        yield from walk(child, f"{name}.", top or child.name)
      elif isinstance(child, ast.ClassDef):
        yield from walk(child, f"{prefix}{child.name}.", top)
      else:
        yield from walk(child, prefix, top)
  return walk(tree, "", None)


def test_function_sizes():
  long = []
  for path in _modules():
    for name, top, lines in _functions(ast.parse(path.read_text())):
      if lines > MAX_FUNCTION_LINES and (_rel(path), top) not in KERNELS:
        long.append(f"{_rel(path)}: {name} ({lines} lines)")
  assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_kernels_allow_list_is_current():
  # An allowance outlives its function only by mistake.
  present = {(_rel(p), n.name) for p in _modules() for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
  assert KERNELS <= present, KERNELS - present


def _is_main_guard(node) -> bool:
  return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
          and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _command_line_parts(tree):
  for node in ast.walk(tree):
    if _is_main_guard(node):
      yield node.lineno, 'if __name__ == "__main__"'
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name in ("argparse", "absl.flags", "absl.app", "ml_collections.config_flags"):
          yield node.lineno, f"import {a.name}"
    elif isinstance(node, ast.ImportFrom) and node.module in ("absl", "ml_collections"):
      for a in node.names:
        if a.name in ("flags", "app", "config_flags"):
          yield node.lineno, f"from {node.module} import {a.name}"
    elif isinstance(node, ast.ImportFrom) and node.module in ("argparse", "absl.flags"):
      yield node.lineno, f"from {node.module} import ..."


def test_command_lines_only_in_cli():
  found = [f"{_rel(p)}:{line}: {what}" for p in _modules()
           if not _rel(p).startswith(COMMAND_LINE_PLACES)
           for line, what in _command_line_parts(ast.parse(p.read_text()))]
  assert not found, "command-line code outside jax_abstain/cli/:\n" + "\n".join(found)


def _import_time_nodes(tree):
  """Nodes that run when the module is imported: everything outside function bodies."""
  stack = list(tree.body)
  while stack:
    node = stack.pop()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      continue
    yield node
    stack.extend(ast.iter_child_nodes(node))


def _side_effect(node):
  if isinstance(node, ast.Call):
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
    owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
    if name == "use" and owner in ("matplotlib", "mpl"):
      return "matplotlib.use"
    if name in ("prefer_eigen_convolutions", "use_eigen_convolutions", "putenv"):
      return name
    if name in ("setdefault", "update", "__setitem__") and "XLA_FLAGS" in ast.unparse(node):
      return "writes XLA_FLAGS"
  if isinstance(node, (ast.Assign, ast.AugAssign)):
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if any("environ" in ast.unparse(t) for t in targets):
      return "writes os.environ"
  return None


def test_no_import_side_effects_in_the_source():
  found = [f"{_rel(p)}:{n.lineno}: {what}" for p in _modules()
           for n in _import_time_nodes(ast.parse(p.read_text()))
           if (what := _side_effect(n))]
  assert not found, "import-time side effects:\n" + "\n".join(found)


_IMPORT_ALL = """
import importlib, os, sys
import matplotlib
before = matplotlib.rcParams._get_backend_or_none()
for name in sys.argv[1:]:
  importlib.import_module(name)
print(os.environ.get("XLA_FLAGS"), before, matplotlib.rcParams._get_backend_or_none())
"""


def test_importing_every_library_module_changes_nothing():
  # The command lines (absl flags are process-global) are left out; the rest all at once.
  names = [_dotted(p) for p in _modules() if not _rel(p).startswith(COMMAND_LINE_PLACES)]
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "MPLBACKEND")}
  env["PYTHONPATH"] = str(ROOT)
  proc = subprocess.run([sys.executable, "-c", _IMPORT_ALL, *names], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["None", "None", "None"], proc.stdout


@pytest.mark.parametrize("folder", ["jax_abstain", "tests", "benchmarks", "launch"])
def test_citations_name_files_of_the_repository(folder):
  found = []
  for path in sorted((ROOT / folder).rglob("*.py")):
    if path == pathlib.Path(__file__).resolve():
      continue
    text = path.read_text()
    for m in STALE_CITATION.finditer(text):   # also across line breaks
      line = text.count("\n", 0, m.start()) + 1
      found.append(f"{path.relative_to(ROOT)}:{line}: {text.splitlines()[line - 1].strip()}")
  assert not found, "cite docs/design.md (appendix A0-A10) instead:\n" + "\n".join(found)


# Packages outside the test extras (PyTorch and the PyTorch reference code): a test file may
# import them, or a helper module that imports them, only after a module-level
# `pytest.importorskip("torch")` or inside a test, so `pip install -e ".[test]"` without torch
# still collects the suite.
OPTIONAL_TORCH = ("torch", "torchattacks", "pyautoattack", "robustbench", "torchax")


def _module_level(tree):
  """The module-level statements, descending into if/try/with but not into defs."""
  todo = list(tree.body)
  while todo:
    node = todo.pop(0)
    yield node
    if isinstance(node, (ast.If, ast.Try, ast.With)):
      todo[:0] = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                  *[s for h in getattr(node, "handlers", []) for s in h.body]]


def _needs_torch(name, seen=()):
  """True if importing `name` imports torch at import time (local modules followed)."""
  if name.split(".")[0] in OPTIONAL_TORCH:
    return True
  path = next((p for p in (ROOT / "tests" / f"{name}.py", ROOT / (name.replace(".", "/") + ".py"))
               if p.is_file()), None)
  if path is None or name in seen or name.startswith("jax_abstain"):
    return False
  return any(isinstance(n, (ast.Import, ast.ImportFrom)) and any(
      _needs_torch(m, (*seen, name)) for m in _imported_names(n))
      for n in _module_level(ast.parse(path.read_text())))


def _imported_names(node):
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  if node.level or not node.module:
    return []
  return [node.module] + [f"{node.module}.{a.name}" for a in node.names]


def _guarded_torch_imports(path):
  """Module-level imports of `path` that need torch and come before any module-level
  ``pytest.importorskip("torch")``."""
  bad = []
  for node in _module_level(ast.parse(path.read_text())):
    call = node.value if isinstance(node, (ast.Assign, ast.Expr)) else None
    if (isinstance(call, ast.Call) and ast.unparse(call.func).endswith("importorskip")
        and call.args and isinstance(call.args[0], ast.Constant)
        and call.args[0].value.split(".")[0] in OPTIONAL_TORCH):
      return bad
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      bad += [f"{path.name}:{node.lineno}: {name}" for name in _imported_names(node)
              if _needs_torch(name)][:1]
  return bad


def test_test_files_import_torch_only_behind_importorskip():
  found = [b for p in sorted((ROOT / "tests").glob("*_test.py")) for b in _guarded_torch_imports(p)]
  assert not found, ("module-level imports that need torch, before pytest.importorskip('torch'):\n"
                     + "\n".join(found))


def test_the_torch_import_scan_catches_an_unguarded_import(tmp_path):
  bad = tmp_path / "x_test.py"
  bad.write_text("import pytest\nimport torch_reference_models as T\n")
  assert _guarded_torch_imports(bad) == ["x_test.py:2: torch_reference_models"]
  bad.write_text("import pytest\nfrom pyautoattack import AutoAttack\n")
  assert _guarded_torch_imports(bad) == ["x_test.py:2: pyautoattack"]
  good = tmp_path / "y_test.py"
  good.write_text("import pytest\ntorch = pytest.importorskip('torch')\nimport torch.nn\n"
                  "def test():\n  import torchattacks\n")
  assert _guarded_torch_imports(good) == []
