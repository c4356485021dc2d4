"""Checks behind the README's Figure 1 notes: seed spread and attack strength.

    python -m launch.synth_checks seeds      # std and ERA-branch/H over training seeds 0-2
    python -m launch.synth_checks attacks    # std model: PGD-100 (step 0.1 eps) vs APGD-CE-100

Runs on CPU in about two minutes; prints one line per model.
"""
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jax_abstain import attacks, compose, data, models, training
from jax_abstain.configs import synth
from jax_abstain.jobs import schema

logging.set_verbosity(logging.WARNING)
MODELS = schema.check(synth.get_config()).toy2d.models   # name -> TrainConfig
X, Y = data.load("synthetic", "train")


def _train(name, seed):
  """Model `name` of the Figure 1 config (its training settings), trained with `seed`."""
  model = models.create("mlp", num_classes=3, seed=seed)
  training.fit(model, X, Y, MODELS[name], workdir=tempfile.mkdtemp(), name=name, seed=seed,
               progress=False)
  return model


def _robust(model, eps, attack=attacks.apgd, **kw):
  pred = jnp.argmax(model(X), -1)
  x_adv = attacks.jit_attack(model, attack, eps=eps, n_iter=100, **kw)(jnp.asarray(X), pred,
                                                                       jax.random.key(0))
  return np.asarray(pred == Y), np.asarray(attacks.is_robust(model, x_adv, pred))


def seeds():
  for seed in (0, 1, 2):
    acc_s, rob_s = _robust(_train("std", seed), 0.1)
    branch = _train("era_branch", seed)
    acc_b, rob_b = _robust(branch, 0.1)
    _, sel = _robust(branch, 0.2)
    h = compose.compose_indicators([sel], [acc_b, acc_s], [rob_b, rob_s])
    print(f"seed {seed}: std rob_acc {100 * np.mean(acc_s & rob_s):.1f}  "
          f"H nat {100 * h.is_acc.mean():.2f} rob {100 * h.is_rob_acc.mean():.2f}", flush=True)


def attack_strength():
  model = _train("std", 0)
  for name, attack, kw in (("PGD-100 step 0.1 eps", attacks.pgd, {"rel_step": 0.1}),
                           ("APGD-CE-100", attacks.apgd, {})):
    acc, rob = _robust(model, 0.1, attack, **kw)
    print(f"std seed 0, {name}: rob_acc {100 * np.mean(acc & rob):.1f}")


if __name__ == "__main__":
  {"seeds": seeds, "attacks": attack_strength}[sys.argv[1] if len(sys.argv) > 1 else "seeds"]()
