"""pyproject.toml against the code and this environment: the version floors hold here (the
suite runs on the floors), every import of the package is a declared requirement (chex only
in the test extra), every command line of jax_abstain/cli/ is a console script and every
console script is a callable ``main(argv=None)``, and a built wheel holds every module and
config of the package. Installing that wheel into a fresh venv and running the console
scripts is `make test-install` (tests/install_check.py), a CI step of its own."""
import ast
import importlib
import importlib.metadata
import inspect
import pathlib
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import jax_abstain

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SCRIPTS = PROJECT["scripts"]
# Imported by the package but installed by a declared requirement (jax requires jaxlib).
PROVIDED_BY = {"jaxlib": "jax"}


def _name(dist: str) -> str:
  return re.sub(r"[-_.]+", "-", dist).lower()


def _requirements(extra=None):
  return [Requirement(r) for r in (PROJECT["optional-dependencies"][extra] if extra
                                   else PROJECT["dependencies"])]


def _installed(name):
  try:
    return Version(importlib.metadata.version(name))
  except importlib.metadata.PackageNotFoundError:
    return None


@pytest.mark.parametrize("extra", [None, "test", "port", "tfds", "tensorboard"])
def test_floors_are_the_tested_versions(extra):
  # `make test` installs the package with these extras; the suite then runs on versions that
  # satisfy every floor (the floors are these very versions, see pyproject.toml).
  for req in _requirements(extra):
    version = _installed(req.name)
    assert version is not None, f"{req.name} is required but not installed"
    assert req.specifier.contains(version, prereleases=True), (str(req), str(version))
    assert any(s.operator == ">=" for s in req.specifier), f"{req}: give a tested floor"


def _third_party_imports():
  """{top-level module: [files importing it]} of every import in jax_abstain/ (also the ones
  inside functions), standard library and the package itself left out."""
  found = {}
  for path in sorted((ROOT / "jax_abstain").rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split(".")[0]
        if top != "jax_abstain" and top not in sys.stdlib_module_names:
          found.setdefault(top, []).append(str(path.relative_to(ROOT)))
  return found


def test_every_import_is_a_declared_requirement():
  runtime = {_name(r.name) for r in _requirements()}
  extras = {_name(r.name) for extra in PROJECT["optional-dependencies"]
            for r in _requirements(extra)}
  distributions = importlib.metadata.packages_distributions()
  undeclared = {}
  for module, files in _third_party_imports().items():
    dists = {_name(PROVIDED_BY.get(d, d)) for d in distributions.get(module, [module])}
    if not dists & (runtime | extras):
      undeclared[module] = files
  assert not undeclared, f"imports without a requirement in pyproject.toml: {undeclared}"


def test_chex_is_a_test_requirement_only():
  assert "chex" not in _third_party_imports()
  assert "chex" not in {_name(r.name) for r in _requirements()}
  assert "chex" in {_name(r.name) for r in _requirements("test")}


def test_every_command_line_is_a_console_script():
  modules = {p.stem for p in (ROOT / "jax_abstain" / "cli").glob("*.py")} - {"__init__", "common"}
  targets = {}
  for script, target in SCRIPTS.items():
    module, _, fn = target.partition(":")
    assert module.startswith("jax_abstain.cli.") and fn == "main", (script, target)
    targets[module.rsplit(".", 1)[1]] = script
  assert modules == set(targets), "cli modules and console scripts differ"
  for module, script in targets.items():
    assert script == ("jax-abstain" if module == "main" else f"jax-abstain-{module}")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_targets_are_main_argv_none(script):
  module, _, fn = SCRIPTS[script].partition(":")
  main = getattr(importlib.import_module(module), fn)
  assert callable(main)
  params = inspect.signature(main).parameters
  assert list(params) == ["argv"] and params["argv"].default is None, (script, params)


def test_wheel_holds_every_module_and_config(tmp_path):
  # --no-build-isolation: the setuptools installed here, no index needed (about 3 s).
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
  wheel, = tmp_path.glob("jax_abstain-*.whl")
  assert wheel.name.startswith(f"jax_abstain-{jax_abstain.__version__}-py3-none-any")
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
  tracked = subprocess.run(["git", "ls-files", "jax_abstain"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
  modules = {p for p in tracked if p.endswith(".py")}
  assert modules <= names, sorted(modules - names)
  assert {f"jax_abstain/configs/{n}.py" for n in ("synth", "mnist5k", "recipe")} <= names
  assert not {n for n in names if n.startswith("tests/") or n.startswith("benchmarks/")}
  scripts = dict(re.findall(r"^(\S+) = (\S+)$", entry_points, re.M))
  assert scripts == SCRIPTS
