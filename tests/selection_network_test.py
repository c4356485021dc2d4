"""Selection-network selectors (paper eq. 15): report columns (certified and attacked scores),
the selector, compositions and tables; an IBP-trained CNN whose certified selection no attack
breaks (slow)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_abstain import attacks, compose, data, ibp, models, selectors, training
from jax_abstain.analysis import tables
from jax_abstain.errors import UserError
from jax_abstain.evaluation import selection
from jax_abstain.jobs import sweep


def _report(**extra):
  """Six samples: branch accurate on 0-3, robust at 0.15 on 0, 1, 4; core accurate on all,
  robust on 2, 3."""
  base = {"sample_idx": np.arange(6), "label": np.zeros(6, int), "pred": np.zeros(6, int),
          "conf": np.ones(6)}
  branch = {**base, "is_acc": np.array([1, 1, 1, 1, 0, 0]),
            "is_rob@0.15": np.array([1, 1, 0, 0, 1, 0]), "is_rob@0.3": np.array([1, 0, 0, 0, 1, 0]),
            "sn_cert@0.15": np.array([0.9, 0.2, 0.8, 0.1, 0.05, 0.0]),
            "sn_adv@0.15": np.array([0.95, 0.6, 0.85, 0.1, 0.7, 0.3]), **extra}
  core = {**base, "is_acc": np.ones(6, int), "is_rob@0.15": np.array([0, 0, 1, 1, 0, 0])}
  return branch, core


def test_selector_reads_the_lowest_score_over_the_ball():
  branch, _ = _report()
  np.testing.assert_array_equal(selectors.selection_network(branch, "0.15", 0.5),
                                [1, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(selectors.select(branch, "sn-empirical", "0.15", tau=0.5),
                                [1, 1, 1, 0, 1, 0])
  with pytest.raises(UserError, match="threshold tau"):
    selectors.select(branch, "sn-certified", "0.15")
  with pytest.raises(UserError, match="no column sn_cert@0.2"):
    selectors.selection_network(branch, "0.2", 0.5)


def test_composition_with_the_certified_selection_network():
  branch, core = _report()
  # tau 0.5, certified: selects 0 and 2. Natural: branch on 0, 2 (1, 1), core elsewhere (1).
  # Robust accurate at 0.15: sample 0 (branch acc+rob), 2 (branch acc, not robust) -> 0;
  # core on 1, 3, 4, 5: robust on 3 only. So 2 of 6.
  r = compose.compose_reports([branch, core], "0.15", selector="sn-certified", tau=0.5)
  assert r["nat_acc"] == pytest.approx(100.0)
  assert r["rob_acc"] == pytest.approx(100 * 2 / 6, abs=0.01)   # rounded to 2 decimals
  assert r["select_at"] == ["0.15"]
  rows = compose.compose_tau_grid([branch, core], "0.15", taus=[0.0, 0.5],
                                  selector="sn-empirical")
  # tau 0.5 empirical: selects 0, 1, 2, 4 -> robust accurate: 0, 1 (branch), 3 (core) = 3.
  assert rows[1]["rob_acc"] == pytest.approx(50.0)


def test_tables_add_the_selection_network_over_the_tau_grid():
  branch, core = _report()
  rows = tables.abstain_rows({"ace": branch}, "0.15", taus=[0.5])
  got = {(r["selector"], r["tau"]): (r["rob_sel"], r["commit_prec"]) for r in rows}
  # certified at 0.5 selects 0 and 2; robust accurate at 0.15 among them: 0 -> 50%.
  assert got[("sn-certified", 0.5)] == (pytest.approx(100 * 2 / 6, abs=0.01), 50.0)
  assert ("sn-empirical", 0.5) in got and ("robustness", None) in got
  comps = tables.composition_rows({"ace": branch, "std": core}, "std", "0.15", taus=[0.5])
  assert {r["selector"] for r in comps} == {"none", "robustness", "sn-certified", "sn-empirical"}


@pytest.mark.slow   # APGD and the bounds compile: about 100 s on the loaded 2-core machine
def test_selection_columns_are_sound_on_a_random_network():
  # Whatever the weights: the certified lower bound is below the attacked score, which is
  # below the clean score (catches a bound of the wrong logit or sign, or a max for a min).
  net = models.create("gowal-small", num_classes=2, seed=3)
  x, _ = data.load("mnist5k", "test")
  x = np.asarray(x[:16])
  cols = selection.selection_columns(net, x, radii=["0.05"], key=jax.random.key(0), n_iter=5,
                                     batch_size=8)
  assert set(cols) == {"sn_score", "sn_cert@0.05", "sn_adv@0.05"}
  assert np.all(cols["sn_cert@0.05"] <= cols["sn_adv@0.05"] + 1e-6)
  assert np.all(cols["sn_adv@0.05"] <= cols["sn_score"] + 1e-6)
  assert np.all(cols["sn_cert@0.05"] < cols["sn_score"])   # a real ball, a real gap
  with pytest.raises(UserError, match="2 outputs"):
    selection.selection_columns(models.create("gowal-small"), x, radii=["0.05"],
                                key=jax.random.key(0))


@pytest.mark.slow
def test_ibp_trained_cnn_is_certified_and_no_attack_flips_its_certified_selection(tmp_path):
  x, y = data.load("mnist5k", "train")
  xt, yt = data.load("mnist5k", "test")
  net = models.create("gowal-small", seed=0)
  training.fit(net, x, y, dict(loss="ibp", eps=0.2, epochs=6, lr=0.05, batch_size=50,
                               schedule="constant", select_every=0, ibp_warmup=0.1,
                               ibp_ramp=0.5), workdir=tmp_path, name="ibp", progress=False)
  net.eval()
  xt, yt = jnp.asarray(xt[:500]), jnp.asarray(yt[:500])
  pred = jnp.argmax(net(xt), -1)
  cert = np.asarray(selection.certified_columns(net, xt, radii=[0.15])["is_cert@0.15"], bool)
  assert np.mean(cert & np.asarray(pred == yt)) > 0.3      # certified accuracy at 0.15
  x_adv = attacks.apgd(net, xt, pred, key=jax.random.key(1), eps=0.15, n_iter=40)
  flipped = np.asarray(jnp.argmax(net(x_adv), -1) != pred)
  assert flipped.any()                                     # the attack works where it can
  assert not (flipped & cert).any()                        # never on a certified point
  assert bool(jnp.all(ibp.certified(net, xt[cert], 0.15)))


def test_sweep_plans_mma_from_trades_and_ibp_from_scratch(tmp_path):
  runs = dict(sweep.planned_runs(tmp_path, [0.5], mma=True, ace=True))
  assert runs["mma"] == {"loss": "mma", "init": str(tmp_path / "trades" / "model"),
                         "train_eps": "0.45"}
  assert runs["ibp"] == {"loss": "ibp", "arch": "gowal-small", "train_eps": "0.2"}
  assert "mma" not in dict(sweep.planned_runs(tmp_path, [0.5]))


def test_selection_labels_are_balanced_by_repeating_the_rarer_class():
  x = np.arange(6, dtype=np.float32).reshape(6, 1)
  labels = np.array([1, 1, 1, 1, 0, 1], np.int32)
  xb, lb = sweep._balanced(x, labels)
  assert (lb == 1).sum() == (lb == 0).sum() == 5
  np.testing.assert_array_equal(xb[lb == 0].ravel(), [4] * 5)
