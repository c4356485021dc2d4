"""Bad input on every command line: one line naming the argument, exit status 2, no traceback,
and no output written (no results, no report, no model; for config errors not even the workdir).

The main job runs in a subprocess (absl flags are process-global); compose, port and
certification are called in-process through `cli.run_with_clean_errors`, exactly what their
``__main__`` does, because a subprocess per case would cost seconds each.
"""
import re
import subprocess
import sys

import numpy as np
import pytest

from jax_abstain import reports
from jax_abstain.cli import common as cli
from tiny_digits_model import train_and_save


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad_input_cli")
  model10 = train_and_save(root / "model10", steps=0)
  model3 = train_and_save(root / "model3", steps=0, num_classes=3)
  (root / "no_manifest").mkdir()
  (root / "empty.pt").write_bytes(b"")
  (root / "a_file").write_text("x")
  cols = {"sample_idx": np.arange(4), "label": np.array([0, 1, 0, 1]),
          "pred": np.array([0, 1, 1, 1]), "is_acc": np.array([1, 1, 0, 1]),
          "conf": np.full(4, 0.9), "is_rob@0.1": np.array([1, 0, 0, 1]),
          "is_rob@0.2": np.array([1, 0, 0, 0])}
  reports.write_report(root / "a.csv", cols)
  reports.write_report(root / "core.csv", cols)
  (root / "not_a_report.csv").write_text('{"x": 1}\n')
  return {"root": root, "model10": model10, "model3": model3}


def _one_error_line(stderr: str) -> str:
  # absl's informational log lines (``I1125 09:08:37.78 ... main.py:48] JAX devices``) aside.
  lines = [l for l in stderr.strip().splitlines() if l.strip() and not re.match(r"[IW]\d{4} ", l)]
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
  assert "Traceback" not in stderr
  return lines[0]


def _outputs(folder):
  return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


# Cases main_test.py and modes_test.py already cover (unknown file, key or data set, eps 1/0,
# -1 or text, unknown mode) are not repeated: each subprocess costs seconds.
# (args after --config; the expected text of the one error line). MODEL10 / MODEL3 / NOMANIFEST
# / AFILE stand for the fixture's paths.
MAIN_CASES = [
    (["--config=configs/synth.py", "--config.eval.n_iter=0"], "config.eval.n_iter: expected an integer >= 1"),
    (["--config=configs/synth.py", "--config.train.momentum=1.5"], "config.train.momentum: expected a finite number in [0.0, 1.0)"),
    (["--config=configs/synth.py:seed=-3"], "config.seed: expected an integer >= 0"),
    (["--config=configs/synth.py", "--config.norm=l7"], "config.norm: expected one of linf, l2"),
    (["--config=configs/evaluate.py:model=NOMANIFEST,data=digits"], "config.model.dir: NOMANIFEST is not a model directory (no manifest.json)"),
    (["--config=configs/evaluate.py:model=MODEL10,data=digits,limit=-1"], "config.data.eval_limit: expected an integer >= 0"),
    (["--config=configs/evaluate.py:model=MODEL10,data=digits,path=/nonexistent/x.tgz"], "config.data.path: no such file: /nonexistent/x.tgz"),
    (["--config=configs/evaluate.py:model=MODEL10,data=digits,name=../up"], "config.name: expected a plain name"),
    (["--config=configs/evaluate.py:model=MODEL10,data=digits", "--config.eval.radii=('0.1','abc')"], "config.eval.radii[1]: expected a positive number"),
]


def _fill(arg, files):
  for key, value in (("NOMANIFEST", files["root"] / "no_manifest"), ("MODEL10", files["model10"]),
                     ("MODEL3", files["model3"]), ("AFILE", files["root"] / "a_file")):
    arg = arg.replace(key, str(value))
  return arg


def _main(args, workdir):
  return subprocess.run([sys.executable, "-m", "jax_abstain.main", *args, f"--workdir={workdir}"],
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,message", MAIN_CASES, ids=[m.split(":")[0][:40] for _, m in MAIN_CASES])
def test_main_bad_config(files, tmp_path, args, message):
  workdir = tmp_path / "wd"
  proc = _main([_fill(a, files) for a in args], workdir)
  assert proc.returncode == cli.EXIT_USAGE, proc.stderr[-2000:]
  assert _fill(message, files) in _one_error_line(proc.stderr)
  # Checked before anything is created: no workdir, so no config.json a later run would trust.
  assert not workdir.exists()


def test_main_labels_outside_the_model_classes(files, tmp_path):
  """A 3-class model on the 10-class digits: found once the data is loaded, before any report."""
  proc = _main([f"--config=configs/evaluate.py:model={files['model3']},data=digits,limit=20"],
               tmp_path)
  assert proc.returncode == 2
  line = _one_error_line(proc.stderr)
  assert "labels span 0..9 but" in line and "3 classes" in line
  assert not (tmp_path / "results.json").exists() and not (tmp_path / "reports").exists()


def test_main_workdir_is_a_file_and_debug_shows_traceback(files, tmp_path):
  afile = files["root"] / "a_file"
  proc = _main(["--config=configs/synth.py"], afile)
  assert proc.returncode == 2
  assert f"--workdir: {afile} exists and is not a folder" in _one_error_line(proc.stderr)
  assert afile.read_text() == "x"
  proc = _main(["--config=configs/synth.py", "--config.eval.n_iter=0", "--debug"], tmp_path / "wd")
  assert proc.returncode != 0 and "Traceback" in proc.stderr and "UserError" in proc.stderr
  assert not (tmp_path / "wd").exists()


def _in_process(module, argv, capsys):
  with pytest.raises(SystemExit) as e:
    cli.run_with_clean_errors(module.main, [str(a) for a in argv])
  return e.value.code, capsys.readouterr().err


# compose.py checks radii where it uses them (named "radius" today; once it calls
# validation.check_radius(args.eps, "--eps") first, the line starts with "--eps"): the asserted
# text is what both forms share.
COMPOSE_CASES = [
    (["--models", "A", "CORE", "--eps", "0"], "must be a positive finite number, got '0'"),
    (["--models", "A", "CORE", "--eps", "1/0"], "division by zero in '1/0'"),
    (["--models", "A", "CORE", "--eps", "0.1", "--select-at", "abc"], "expected a positive number such as 0.5 or 1/255, got 'abc'"),
    (["--models", "A", "--eps", "0.1"], "--models: give at least one abstain model report and a core model report"),
    (["--models", "NOTREPORT", "CORE", "--eps", "0.1"], "not a per-sample report"),
    (["--models", "MISSING", "CORE", "--eps", "0.1"], "no such report"),
    # The abstain model selects at 2 eps = 0.6 (the core is asked only for eps).
    (["--models", "A", "CORE", "--eps", "0.3"], "a.csv (abstain model 1): report has no column is_rob@0.6; available: is_rob@0.1, is_rob@0.2"),
]


@pytest.mark.parametrize("args,message", COMPOSE_CASES, ids=[m[:30] for _, m in COMPOSE_CASES])
def test_compose_bad_input(files, tmp_path, capsys, args, message):
  from jax_abstain.cli import compose
  root = files["root"]
  names = {"A": root / "a.csv", "CORE": root / "core.csv", "NOTREPORT": root / "not_a_report.csv",
           "MISSING": root / "missing.csv"}
  out = tmp_path / "comp.json"
  code, err = _in_process(compose, [names.get(a, a) for a in args] + ["--json", out], capsys)
  assert code == 2
  assert message in _one_error_line(err)
  assert not out.exists()


def test_port_bad_input(files, tmp_path, capsys):
  from jax_abstain.cli import port
  root = files["root"]
  out = tmp_path / "ported"
  for argv, message in [
      (["--arch", "mlp", "--checkpoint", root / "empty.pt", "--out", out], "is empty (an interrupted download?)"),
      (["--arch", "mlp", "--checkpoint", root / "missing.pt", "--out", out], "--checkpoint: no such checkpoint file"),
      (["--arch", "mlp", "--checkpoint", files["model10"] / "weights.safetensors", "--out", out,
        "--num-classes", "1"], "--num-classes: expected an integer >= 2, got 1"),
      (["--arch", "mlp", "--checkpoint", files["model10"] / "weights.safetensors", "--out",
        root / "a_file"], "is a file; expected a folder"),
      (["--checkpoint", root / "empty.pt", "--out", out], "missing --arch"),
      (["--export", root / "no_manifest", "--out", tmp_path / "x.pt"], "is not a model directory"),
      (["--arch", "mlp", "--bogus"], "unrecognized arguments: --bogus"),
  ]:
    code, err = _in_process(port, argv, capsys)
    assert code == 2, (argv, err)
    assert message in _one_error_line(err), (argv, err)
    assert not out.exists() and not (tmp_path / "x.pt").exists()
  assert (root / "a_file").read_text() == "x"


CERT_CASES = [
    (["--sigma", "0"], "--sigma: expected a finite number in (0.0, inf), got 0.0"),
    (["--sigma", "nan"], "--sigma: expected a finite number"),
    (["--sigma", "abc"], "argument --sigma: invalid float value: 'abc'"),
    (["--sigma", "0.25", "--alpha", "1.5"], "--alpha: expected a finite number in (0.0, 1.0)"),
    (["--sigma", "0.25", "--n", "0"], "--n: expected an integer >= 1, got 0"),
    (["--sigma", "0.25", "--eps", "0.25", "1/0"], "--eps[1]: division by zero in '1/0'"),
    (["--sigma", "0.25", "--eps", "-0.5"], "--eps[0]: expected a positive number such as 0.5 or 1/255, got '-0.5'"),
    (["--sigma", "0.25", "--limit", "-2"], "--limit: expected an integer >= 0"),
    (["--sigma", "0.25", "MODEL=NOMANIFEST"], "--model: NOMANIFEST is not a model directory"),
    (["--sigma", "0.25", "OUT=DIR"], "--out: OUTDIR is a folder; expected a file name"),
    (["--sigma", "0.25", "MODEL=MODEL3"], "but there are 3 classes (expected 0..2)"),
]


@pytest.mark.parametrize("args,message", CERT_CASES, ids=[m[:28] for _, m in CERT_CASES])
def test_certification_bad_input(files, tmp_path, capsys, args, message):
  from jax_abstain.cli import certify as certification
  model, out = files["model10"], tmp_path / "cert.csv"
  options = {"--data": "digits", "--limit": "5", "--n": "50", "--n0": "10",
             "--json": tmp_path / "s.json"}
  argv = []
  for a in args:
    if a.startswith("MODEL="):
      model = {"NOMANIFEST": files["root"] / "no_manifest", "MODEL3": files["model3"]}[a[6:]]
    elif a == "OUT=DIR":
      out = tmp_path / "outdir"
      out.mkdir()
    else:
      argv.append(a)
  for flag, value in options.items():
    if flag not in argv:
      argv += [flag, value]
  argv += ["--model", model, "--out", out]
  code, err = _in_process(certification, argv, capsys)
  assert code == 2
  message = message.replace("NOMANIFEST", str(files["root"] / "no_manifest"))
  message = message.replace("OUTDIR", str(tmp_path / "outdir"))
  assert message in _one_error_line(err)
  # Nothing written: no report, no partial file, no settings, no summary.
  assert [p for p in _outputs(tmp_path) if p != "outdir"] == []
