"""The package as a user installs it: ``make test-install`` (a CI step after ``make test``).

    make test-install        # = python -m pytest tests/install_check.py

Builds the wheel (``pip wheel --no-deps .``), installs it, not editable, into a fresh venv with
the runtime requirements pinned to their floors in pyproject.toml (from the package index; no
torch, no test extra), and from a folder outside the checkout runs ``--help`` of every console
script and the Figure 1 job by config name, ``jax-abstain --config=synth --workdir=W``, whose
numbers must be README.md's table ("Measured"). About 3 minutes on this 2-core machine (most of
it the job; the install is ~45 s with an empty pip cache). The file name does not match
pytest.ini's ``*_test.py``, so ``make test`` leaves it out.
"""
import json
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# README.md, "Measured (seed 0, eps = 0.1 Linf, ...)": nat_acc, rob_acc, rob_inacc in percent.
README_FIGURE1 = {"std": (99.9, 88.8, 0.0), "trades": (98.4, 98.4, 1.6), "era": (98.4, 98.4, 0.0)}
README_COMPOSITION = (99.9, 98.1)   # H = (ERA branch, S@0.2) + std: nat_acc, rob_acc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
  """bin/ of a fresh venv holding the built wheel and its floors."""
  root = tmp_path_factory.mktemp("install")
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                  str(root / "dist"), str(ROOT)], check=True)
  wheel, = (root / "dist").glob("jax_abstain-*.whl")
  # The interpreter behind this venv (a venv made from a venv's python would nest).
  base = getattr(sys, "_base_executable", sys.executable)
  subprocess.run([base, "-m", "venv", str(root / "venv")], check=True)
  floors = root / "floors.txt"
  floors.write_text("".join(r.replace(">=", "==") + "\n" for r in PROJECT["dependencies"]))
  subprocess.run([str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
                  "-c", str(floors), str(wheel)], check=True)
  return root / "venv" / "bin"


def _run(venv, cwd, *argv, timeout=600):
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([str(venv / argv[0]), *argv[1:]], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_installed_from_the_wheel_without_torch_or_chex(venv, tmp_path):
  code = ("import importlib.util as u, jax_abstain; print(jax_abstain.__file__); "
          "print(u.find_spec('torch'), u.find_spec('chex'))")
  proc = _run(venv, tmp_path, "python", "-c", code)
  assert proc.returncode == 0, proc.stderr
  where, missing = proc.stdout.split("\n")[:2]
  assert where.startswith(str(venv.parent)) and "site-packages" in where   # not the checkout
  assert missing == "None None"


@pytest.mark.parametrize("script", sorted(PROJECT["scripts"]))
def test_console_script_help(venv, tmp_path, script):
  proc = _run(venv, tmp_path, script, "--help", timeout=120)
  # absl's app (jax-abstain) exits 1 after printing --help; argparse exits 0. Either way the
  # text names the script's own flags (absl lists only the main module's flags by default,
  # and a console script's main module is pip's wrapper).
  assert proc.returncode in ((0, 1) if script == "jax-abstain" else (0,)), proc.stderr
  text = proc.stdout + proc.stderr
  flags = ("--config", "--workdir") if script == "jax-abstain" else ("usage: ", "--help")
  assert all(f in text for f in flags), text[-2000:]
  assert "Traceback" not in text, text[-2000:]


def test_figure1_job_by_config_name(venv, tmp_path):
  proc = _run(venv, tmp_path, "jax-abstain", "--config=synth", "--workdir=W", timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / "W" / "results.json").read_text())
  for name, expected in README_FIGURE1.items():
    got = results["models"][name]
    got = (got["nat_acc"], got["rob_acc"], got["rob_inacc"])
    assert got == pytest.approx(expected, abs=0.05), (name, got)
  comp = results["composition"]
  assert (comp["nat_acc"], comp["rob_acc"]) == pytest.approx(README_COMPOSITION, abs=0.05)
  assert (tmp_path / "W" / "decision_regions.png").stat().st_size > 0
