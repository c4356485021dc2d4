"""Composition (eq. 12) and cascades on hand-made indicators, reports and the CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

from jax_abstain import compose, reports
from jax_abstain.cli import compose as compose_cli
from jax_abstain.errors import UserError

S = np.array([1, 1, 0, 0, 1, 0])
B_ACC, B_ROB = np.array([1, 0, 1, 1, 1, 0]), np.array([1, 1, 0, 1, 0, 1])
T_ACC, T_ROB = np.array([1, 1, 1, 0, 0, 1]), np.array([0, 0, 1, 1, 1, 0])


def test_two_composition_equals_eq12():
  comp = compose.compose_indicators([S], [B_ACC, T_ACC], [B_ROB, T_ROB])
  nat = S * B_ACC + (1 - S) * T_ACC
  rob = S * B_ACC * B_ROB + (1 - S) * T_ACC * T_ROB
  np.testing.assert_array_equal(comp.is_acc, nat.astype(bool))
  np.testing.assert_array_equal(comp.is_rob_acc, rob.astype(bool))
  np.testing.assert_array_equal(comp.answered_by, [0, 0, 1, 1, 0, 1])
  summary = comp.summary()
  assert summary["nat_acc"] == round(100 * nat.mean(), 2)
  assert summary["rob_acc"] == round(100 * rob.mean(), 2)
  assert summary["rob_sel"] == 50.0
  # Selected: samples 0, 1, 4; accurate and robust among them: sample 0 only.
  assert summary["commit_prec"] == round(100 / 3, 2)
  assert summary["answered_share"] == [50.0, 50.0]


def test_answered_share_lists_every_model_even_silent_ones():
  never = np.zeros(6, int)
  comp = compose.compose_indicators([never, S], [B_ACC, B_ACC, T_ACC], [B_ROB, B_ROB, T_ROB])
  assert comp.summary()["answered_share"] == [0.0, 50.0, 50.0]
  assert comp.summary()["rob_sel"] == 0.0 and comp.summary()["commit_prec"] == 0.0
  always = np.ones(6, int)
  comp = compose.compose_indicators([always], [B_ACC, T_ACC], [B_ROB, T_ROB])
  assert comp.summary()["answered_share"] == [100.0, 0.0]


@given(st.lists(st.tuples(*[st.booleans()] * 8), min_size=1, max_size=40))
def test_cascade_is_recursive_two_composition(rows):
  s1, s2, a1, r1, a2, r2, a3, r3 = (np.array(c) for c in zip(*rows))
  cascade = compose.compose_indicators([s1, s2], [a1, a2, a3], [r1, r2, r3])
  inner = compose.compose_indicators([s2], [a2, a3], [r2, r3])
  outer = compose.compose_indicators([s1], [a1, inner.is_acc], [r1, inner.is_rob])
  np.testing.assert_array_equal(cascade.is_acc, outer.is_acc)
  np.testing.assert_array_equal(cascade.is_rob_acc, outer.is_rob_acc)


def _report(path, acc, rob1, rob2, label=None, conf=None):
  n = len(acc)
  label = np.zeros(n, int) if label is None else label
  conf = np.full(n, 0.9) if conf is None else np.asarray(conf)
  reports.write_report(path, {"sample_idx": np.arange(n), "label": label, "pred": 1 - np.asarray(acc),
                              "is_acc": acc, "conf": conf, "is_rob@1/255": rob1,
                              "is_rob@2/255": rob2})


def test_compose_reports_selects_at_2eps_by_default(tmp_path):
  _report(tmp_path / "b.csv", B_ACC, B_ROB, S)
  _report(tmp_path / "t.csv", T_ACC, T_ROB, T_ROB)
  cols = [reports.read_report(tmp_path / n) for n in ("b.csv", "t.csv")]
  result = compose.compose_reports(cols, "1/255")
  assert result["select_at"] == ["2/255"]
  assert result["nat_acc"] == round(100 * np.mean(S * B_ACC + (1 - S) * T_ACC), 2)
  same_eps = compose.compose_reports(cols, "1/255", select_at=["1/255"])
  assert same_eps["rob_sel"] == round(100 * B_ROB.mean(), 2)


def test_compose_certified_reports():
  cert = {"sample_idx": np.arange(4), "label": np.array([0, 1, 1, 0]), "pred": np.zeros(4, int),
          "is_acc": np.ones(4, int), "conf": np.ones(4), "cert_pred": np.array([0, 1, -1, 1]),
          "radius": np.array([0.5, 0.3, 0.0, 0.6])}
  core = {"sample_idx": np.arange(4), "label": cert["label"], "pred": cert["label"],
          "is_acc": np.ones(4, int), "conf": np.ones(4)}
  result = compose.compose_reports([cert, core], 0.25)
  # Certified at >= 0.25: samples 0, 1, 3; sample 3 is certified but wrong; sample 2 -> core.
  assert result["select_at"] == ["0.25"]
  assert result["rob_sel"] == 75.0
  assert result["nat_acc"] == 75.0
  assert result["rob_acc"] == 50.0      # the core is taken as non-robust (authors' convention)


def test_compose_rejects_misaligned_reports(tmp_path):
  _report(tmp_path / "b.csv", B_ACC, B_ROB, S)
  _report(tmp_path / "t.csv", T_ACC[:4], T_ROB[:4], T_ROB[:4])
  cols = [reports.read_report(tmp_path / n) for n in ("b.csv", "t.csv")]
  with pytest.raises(UserError, match="samples"):
    compose.compose_reports(cols, "1/255")


def test_cli_prints_table_and_writes_json(tmp_path):
  _report(tmp_path / "b.csv", B_ACC, B_ROB, S)
  _report(tmp_path / "t.csv", T_ACC, T_ROB, T_ROB)
  out = tmp_path / "c.json"
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.cli.compose", "--models", str(tmp_path / "b.csv"),
                         str(tmp_path / "t.csv"), "--eps", "1/255", "--json", str(out)],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  # By hand: b alone is accurate on 4 of 6, accurate and robust on samples 0 and 3, robust and
  # inaccurate on 1 and 5; t alone 4 of 6, sample 2, samples 3 and 4. The composition (eq. 12)
  # is accurate on 0, 2, 4, 5 and robustly accurate on 0 (b) and 2 (t); b selects 0, 1, 4
  # and only 0 of them is accurate and robust. Gain: the composition minus t alone.
  assert proc.stdout.splitlines() == [
      "composition at eps=1/255 (robustness selectors at 2/255); gain = composition - t alone,"
      " in points",
      "",
      "|  | nat_acc | rob_acc @1/255 | rob_inacc @1/255 | rob_sel | commit_prec | gain nat_acc "
      "| gain rob_acc |",
      "|---|---:|---:|---:|---:|---:|---:|---:|",
      "| b alone (abstain) | 66.67 | 33.33 | 33.33 |  |  |  |  |",
      "| t alone (core) | 66.67 | 16.67 | 33.33 |  |  |  |  |",
      "| composition | 66.67 | 33.33 |  | 50.00 | 33.33 | +0.00 | +16.66 |",
      "",
      "robustness counted at eps=1/255: b empirical, t empirical"]
  result = json.loads(out.read_text())
  assert (result["nat_acc"], result["rob_acc"], result["rob_sel"]) == (66.67, 33.33, 50.0)
  assert result["gain"] == {"nat_acc": 0.0, "rob_acc": 16.66}
  assert [(a["model"], a["role"]) for a in result["alone"]] == [("b", "abstain"), ("t", "core")]
  assert result["alone"][1]["rob_acc"] == pytest.approx(100 / 6)


def test_cli_tau_grid_has_a_gain_per_threshold(tmp_path):
  _report(tmp_path / "b.csv", B_ACC, B_ROB, S, conf=[0.9, 0.2, 0.6, 0.95, 0.4, 0.1])
  _report(tmp_path / "t.csv", T_ACC, T_ROB, T_ROB)
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.cli.compose", "--models",
                         str(tmp_path / "b.csv"), str(tmp_path / "t.csv"), "--eps", "1/255",
                         "--selector", "softmax-natural", "--tau-grid", "0", "0.5"],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  rows = [l for l in proc.stdout.splitlines() if l.startswith("| composition")]
  # tau 0: b answers everything (b alone: 66.67 / 33.33); tau 0.5: b answers 0, 2, 3
  # (accurate; robust and accurate: 0, 3), t answers 1, 4, 5 (accurate: 1, 5; robust: none):
  # 5 of 6 accurate, 2 of 6 robustly accurate, 2 of the 3 selected robustly accurate.
  assert rows == ["| composition tau=0 | 66.67 | 33.33 |  | 100.00 | 33.33 | +0.00 | +16.66 |",
                  "| composition tau=0.5 | 83.33 | 33.33 |  | 50.00 | 66.67 | +16.66 | +16.66 |"]


@pytest.mark.parametrize("args,message", [
    (["--eps", "1/0"], "division by zero"),
    (["--eps", "-1"], "positive"),
    # The branch selects at 2 eps = 8/255, which its report lacks; the error names it.
    (["--eps", "4/255"], "b.csv (abstain model 1): report has no column is_rob@8/255"),
])
def test_cli_bad_input_one_line_no_output(tmp_path, args, message):
  _report(tmp_path / "b.csv", B_ACC, B_ROB, S)
  _report(tmp_path / "t.csv", T_ACC, T_ROB, T_ROB)
  out = tmp_path / "c.json"
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.cli.compose", "--models", str(tmp_path / "b.csv"),
                         str(tmp_path / "t.csv"), "--json", str(out), *args], capture_output=True, text=True)
  assert proc.returncode == 2
  assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
  assert "Traceback" not in proc.stderr and not out.exists()


def test_cli_missing_report(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "jax_abstain.cli.compose", "--models", str(tmp_path / "x.csv"),
                         str(tmp_path / "y.csv"), "--eps", "0.1"], capture_output=True, text=True)
  assert proc.returncode == 2 and "no such report" in proc.stderr


def test_selection_at_2eps_not_eps_counts_selected_and_not_robust():
  # Sample 0: robust at 2 eps but not at eps (possible when the columns come from different
  # attacks): selected by the branch, accurate, but not robust -> natural yes, robust no.
  # Sample 1: selected, accurate and robust. Sample 2: abstains; the core is accurate and
  # robust. Sample 3: abstains; the core is accurate but not robust.
  branch = {"sample_idx": np.arange(4), "label": np.zeros(4, int), "is_acc": np.array([1, 1, 1, 1]),
            "is_rob@1/255": np.array([0, 1, 1, 1]), "is_rob@2/255": np.array([1, 1, 0, 0])}
  core = {"sample_idx": np.arange(4), "label": np.zeros(4, int), "is_acc": np.array([0, 0, 1, 1]),
          "is_rob@1/255": np.array([1, 1, 1, 0]), "is_rob@2/255": np.array([1, 1, 1, 0])}
  comp, sel, _, _ = compose.compose_reports_per_sample([branch, core], "1/255")
  np.testing.assert_array_equal(sel, [1, 1, 0, 0])
  np.testing.assert_array_equal(comp.is_acc, [1, 1, 1, 1])
  np.testing.assert_array_equal(comp.is_rob_acc, [0, 1, 1, 0])
  result = compose.compose_reports([branch, core], "1/255")
  assert (result["nat_acc"], result["rob_acc"], result["rob_sel"]) == (100.0, 50.0, 50.0)
  assert result["commit_prec"] == 50.0


def _sr_report(path, acc, rob, adv_conf):
  n = len(acc)
  reports.write_report(path, {"sample_idx": np.arange(n), "label": np.zeros(n, int),
                              "pred": 1 - np.asarray(acc), "is_acc": acc, "conf": np.full(n, 0.9),
                              "is_rob@1/255": rob, "is_rob@2/255": rob, "adv_conf@2/255": adv_conf})


ADV_CONF = np.array([0.95, 0.3, 0.6, 0.8, 0.99, 0.1])


def test_softmax_composition_over_a_tau_grid(tmp_path):
  _sr_report(tmp_path / "b.csv", B_ACC, B_ROB, ADV_CONF)
  _report(tmp_path / "t.csv", T_ACC, T_ROB, T_ROB)
  cols = [reports.read_report(tmp_path / n) for n in ("b.csv", "t.csv")]
  rows = compose.compose_tau_grid(cols, "1/255", [0.0, 0.5, 0.9, 1.0])
  for row in rows:
    s = (ADV_CONF >= row["tau"]).astype(int)
    assert row["nat_acc"] == round(100 * np.mean(s * B_ACC + (1 - s) * T_ACC), 2)
    assert row["rob_acc"] == round(100 * np.mean(s * B_ACC * B_ROB + (1 - s) * T_ACC * T_ROB), 2)
    assert row["rob_sel"] == round(100 * s.mean(), 2) and row["select_at"] == ["2/255"]
  assert [r["rob_sel"] for r in rows] == [100.0, round(400 / 6, 2), round(200 / 6, 2), 0.0]
  assert len(compose.compose_tau_grid(cols, "1/255")) == 20      # the authors' linspace(0, .99, 20)


def _run_cli(argv, capsys):
  """compose's CLI in-process: (exit code, stdout, stderr)."""
  from jax_abstain.cli import common as cli
  try:
    cli.run_with_clean_errors(compose_cli.main, argv)
    code = 0
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


def test_cli_softmax_tau_grid(tmp_path, capsys):
  _sr_report(tmp_path / "b.csv", B_ACC, B_ROB, ADV_CONF)
  _report(tmp_path / "t.csv", T_ACC, T_ROB, T_ROB)
  out = tmp_path / "g.json"
  code, stdout, stderr = _run_cli(["--models", str(tmp_path / "b.csv"), str(tmp_path / "t.csv"),
                                   "--eps", "1/255", "--selector", "softmax", "--tau-grid", "0.5",
                                   "0.9", "--json", str(out)], capsys)
  assert code == 0, stderr
  rows = json.loads(out.read_text())["rows"]
  assert [r["tau"] for r in rows] == [0.5, 0.9] and rows[1]["rob_sel"] == round(200 / 6, 2)
  table = stdout.strip().splitlines()[2:-2]      # after the title, before the robustness line
  assert table[4:] == [f"| composition tau={r['tau']:g} | {r['nat_acc']:.2f} | {r['rob_acc']:.2f} "
                       f"|  | {r['rob_sel']:.2f} | {r['commit_prec']:.2f} | "
                       f"{r['gain']['nat_acc']:+.2f} | {r['gain']['rob_acc']:+.2f} |" for r in rows]
  assert stdout.strip().splitlines()[-1] == "robustness counted at eps=1/255: b empirical, t empirical"


@pytest.mark.parametrize("make,args,message", [
    ("plain", ["--selector", "entropy"], "--selector: expected one of robustness"),
    ("plain", ["--selector", "softmax", "--tau", "0.5"], "no column adv_conf@2/255"),
    ("plain", ["--selector", "softmax"], "give --tau T or --tau-grid"),
    ("plain", ["--tau", "0.5"], "only with --selector softmax"),
    ("sr", ["--selector", "softmax", "--tau-grid", "x"], "--tau-grid: expected numbers"),
    ("shuffled", [], "lists different samples"),
])
def test_cli_rejects_bad_selector_requests(tmp_path, capsys, make, args, message):
  if make == "sr":
    _sr_report(tmp_path / "b.csv", B_ACC, B_ROB, ADV_CONF)
  else:
    _report(tmp_path / "b.csv", B_ACC, B_ROB, S)
  _report(tmp_path / "t.csv", T_ACC, T_ROB, T_ROB)
  if make == "shuffled":
    cols = reports.read_report(tmp_path / "t.csv")
    reports.write_report(tmp_path / "t.csv", {k: v[::-1] for k, v in cols.items()})
  code, _, stderr = _run_cli(["--models", str(tmp_path / "b.csv"), str(tmp_path / "t.csv"),
                              "--eps", "1/255", *args], capsys)
  assert code == 2
  assert message in stderr and len(stderr.strip().splitlines()) == 1


# Issue 16, item 9: each model is asked only for the columns its role needs, and a certified
# composition counts only certified robustness.

def _emp(acc, label=None, **rob):
  n = len(acc)
  label = np.zeros(n, int) if label is None else label
  return {"sample_idx": np.arange(n), "label": label, "pred": np.zeros(n, int),
          "is_acc": np.array(acc), "conf": np.full(n, 0.9),
          **{f"is_rob@{k.replace('_', '/')}": np.array(v) for k, v in rob.items()}}


def test_core_is_asked_only_for_its_robustness_at_eps(tmp_path, capsys):
  # A standard core evaluated at the threat radii 1/255 and 2/255; threat eps 2/255, so the
  # branch selects at 4/255. The core never selects: no is_rob@4/255 is needed from it.
  branch = _emp([1, 1, 0, 1], **{"2_255": [1, 0, 1, 1], "4_255": [1, 0, 1, 0]})
  core = _emp([1, 1, 1, 0], **{"1_255": [1, 1, 0, 1], "2_255": [1, 0, 0, 1]})
  result = compose.compose_reports([branch, core], "2/255")
  # Selected 0, 2 (branch: 0 accurate and robust at 2/255, 2 wrong); core answers 1 (accurate,
  # not robust) and 3 (wrong): natural 2/4, robust accurate 1/4.
  assert (result["nat_acc"], result["rob_acc"], result["rob_sel"]) == (50.0, 25.0, 50.0)
  assert result["robustness"] == ["empirical", "empirical"]
  for name, cols in (("b.csv", branch), ("t.csv", core)):
    reports.write_report(tmp_path / name, cols)
  code, stdout, stderr = _run_cli(["--models", str(tmp_path / "b.csv"), str(tmp_path / "t.csv"),
                                   "--eps", "2/255"], capsys)
  assert code == 0, stderr
  # The core alone: accurate on 0-2 (75%), robust and accurate on 0, robust and wrong on 3.
  assert "| t alone (core) | 75.00 | 25.00 | 25.00 |" in stdout
  assert "| composition | 50.00 | 25.00 |  | 50.00 | 50.00 | -25.00 | +0.00 |" in stdout
  # The same for the tau grid of a softmax branch: the core needs no adv_conf column either.
  sr = {**branch, "adv_conf@4/255": np.array([0.95, 0.2, 0.9, 0.1])}
  rows = compose.compose_tau_grid([sr, core], "2/255", [0.5])
  # tau 0.5 selects 0 and 2, as the robustness indicator at 4/255 did.
  assert (rows[0]["nat_acc"], rows[0]["rob_acc"]) == (50.0, 25.0)


def test_middle_model_is_asked_for_its_own_selection_radius_only():
  # eps 0.1; model 1 selects at 0.2, model 2 at 0.3 (its report has no 0.2 column).
  m1 = _emp([1, 1, 1, 1], **{"0.1": [1, 0, 0, 0], "0.2": [1, 0, 0, 0]})
  m2 = _emp([1, 0, 1, 1], **{"0.1": [1, 1, 1, 0], "0.3": [0, 1, 1, 0]})
  core = _emp([0, 1, 1, 1], **{"0.1": [0, 0, 0, 1]})
  result = compose.compose_reports([m1, m2, core], "0.1", ["0.2", "0.3"])
  # 0 -> m1 (acc, rob); 1 -> m2 (wrong); 2 -> m2 (acc, rob); 3 -> core (acc, rob).
  assert (result["nat_acc"], result["rob_acc"]) == (75.0, 75.0)
  assert result["answered_share"] == [25.0, 50.0, 25.0]
  with pytest.raises(UserError, match=r"^report 2 \(abstain model 2\): report has no column "
                     r"is_rob@0\.2"):
    compose.compose_reports([m1, m2, core], "0.1")


CERT_BRANCH = {"sample_idx": np.arange(4), "label": np.array([0, 1, 1, 0]),
               "pred": np.zeros(4, int), "is_acc": np.ones(4, int), "conf": np.ones(4),
               "cert_pred": np.array([0, 1, -1, 1]), "radius": np.array([0.5, 0.3, 0.0, 0.6])}


def test_certified_composition_counts_no_empirical_robustness_of_the_core(tmp_path, capsys):
  # The 4-sample example: the branch certifies 0, 1 (right) and 3 (wrong) at 0.25 and
  # abstains on 2; the core answers 2 accurately and its *attack* columns say robust. Certified
  # robust accuracy counts samples 0 and 1 only: 50.00 (75.00 if the core's empirical
  # robustness were counted).
  core = {"sample_idx": np.arange(4), "label": CERT_BRANCH["label"], "pred": CERT_BRANCH["label"],
          "is_acc": np.ones(4, int), "conf": np.ones(4), "is_rob@0.25": np.ones(4, int),
          "is_rob@0.5": np.ones(4, int)}
  result = compose.compose_reports([CERT_BRANCH, core], 0.25)
  assert result["rob_acc"] == 50.0 and result["nat_acc"] == 75.0 and result["rob_sel"] == 75.0
  assert result["robustness"] == ["certified", "none"]
  reports.write_report(tmp_path / "cert.csv", CERT_BRANCH)
  reports.write_report(tmp_path / "core.csv", core)
  code, stdout, stderr = _run_cli(["--models", str(tmp_path / "cert.csv"),
                                   str(tmp_path / "core.csv"), "--eps", "0.25"], capsys)
  assert code == 0, stderr
  # Alone, as counted in this composition: the smoothed branch answers 0, 1 right, 3 wrong
  # (certified all three); the core is accurate everywhere and counts no robustness.
  assert stdout.splitlines()[4:7] == [
      "| cert alone (abstain, robustness certified) | 50.00 | 50.00 | 25.00 |  |  |  |  |",
      "| core alone (core, robustness none) | 100.00 | 0.00 | 0.00 |  |  |  |  |",
      "| composition | 75.00 | 50.00 |  | 75.00 | 66.67 | -25.00 | +50.00 |"]
  assert stdout.strip().splitlines()[-1] == (
      "robustness counted at eps=0.25: cert certified, core none; a certified composition "
      "counts only certified robustness")


def test_certified_core_and_empirical_middle_model():
  # An empirical composition with a certified core counts the core's certified robustness.
  label = CERT_BRANCH["label"]
  branch = _emp([1, 0, 0, 0], label, **{"0.25": [1, 1, 0, 0], "0.5": [1, 1, 0, 0]})
  result = compose.compose_reports([branch, CERT_BRANCH], 0.25)
  # 0 -> branch (acc, rob); 1 -> branch (wrong); 2 -> core abstains (wrong, never certified);
  # 3 -> core: certified but wrong.
  assert (result["nat_acc"], result["rob_acc"]) == (25.0, 25.0)
  assert result["robustness"] == ["empirical", "certified"]
  # A certified cascade: an empirical middle model answers but contributes no robustness.
  middle = _emp([1, 1, 1, 1], label, **{"0.25": [1, 1, 1, 1], "0.5": [1, 1, 1, 1]})
  core = _emp([1, 1, 1, 1], label, **{"0.25": [1, 1, 1, 1]})
  result = compose.compose_reports([CERT_BRANCH, middle, core], 0.25)
  # Branch answers 0, 1 (certified, right) and 3 (wrong); the middle model answers 2 (right,
  # not certified).
  assert (result["nat_acc"], result["rob_acc"]) == (75.0, 50.0)
  assert result["robustness"] == ["certified", "none", "none"]
