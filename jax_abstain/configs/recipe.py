"""The paper's fine-tuning recipe as a ``train``-mode config (paper appendix A.2;
docs/design.md, appendix A9).

    def get_config(arg=None):
      arg = common.parse_arg(arg, **recipe.arguments(loss="era", data="cifar10", ...))
      return recipe.finetune(arg)

50 epochs, SGD lr 1e-3 (momentum 0.9, weight decay 1e-4), lr x0.1 from 75% of the epochs,
global batch 200, 10-step PGD with step 0.25 eps, model selection every 5 epochs by 40-step
PGD (step 0.1 eps) on 2,000 validation images; evaluation at the threat radius, twice it and
the training radius. The config files only change what differs
(loss, data, model, radius, and the authors' deviations, which their docstrings name).
Every field stays overridable: ``--config.train.beta=0.5``, ``--config.data.augment=none``.

The start model is ``init`` (a model directory) or else ``start`` (a RobustBench name of the
data set's ``threat_model`` leaderboard, downloaded and ported on first use, `jobs.inputs`);
``arch`` (training from scratch) only when both are empty, and with none of the three the job
check refuses the config: fine-tuning never starts from random weights. ``core`` (a RobustBench
name) or ``core_dir`` adds the composition with that core at the threat radius, selected at
2 eps (`jobs.composition`: Table 1 row, reports, Fig. 2-4). ``path`` "" downloads the
official CIFAR archive into the data cache (`data.fetch`).
"""
import ml_collections

from jax_abstain import radii

_DEFAULTS = dict(
    loss="era", data="cifar10", path="", num_classes=10, arch="", init="", start="",
    threat_model="Linf", core="", core_dir="", eps="2/255",
    threat="", norm="linf", beta=1.0, trades_beta=6.0, variant="paper", epochs=50, batch=200,
    lr=1e-3, schedule="trades", augment="crop_flip", selection="train_holdout", select_size=2000,
    select_every=5, eval_limit=0, train_limit=0, name="", checkpoint_every=500, seed=0,
    sigma=0.12, num_noise=0, gamma=4.0, certify_n=100_000, attack_steps=10,
    beta_decay_every=0)


def arguments(**overrides) -> dict:
  """The config arguments (``--config=FILE:key=value``) and their defaults for one file."""
  unknown = set(overrides) - set(_DEFAULTS)
  if unknown:
    raise ValueError(f"recipe: unknown arguments {sorted(unknown)}")
  return {**_DEFAULTS, **overrides}


def finetune(arg) -> ml_collections.ConfigDict:
  """The train-mode config for parsed arguments `arg` (see `arguments`)."""
  config = ml_collections.ConfigDict()
  config.mode = "train"
  config.name = arg.name or arg.loss
  config.seed = arg.seed
  config.data = dict(name=arg.data, path=arg.path, split="test", eval_limit=arg.eval_limit,
                     train_limit=arg.train_limit, augment=arg.augment)
  start = "" if arg.init else arg.start
  config.model = dict(name="" if arg.init or start else arg.arch, num_classes=arg.num_classes,
                      options={}, init_dir=arg.init, robustbench=start,
                      threat_model=arg.threat_model)
  config.train = dict(
      loss=arg.loss, beta=arg.beta, trades_beta=arg.trades_beta, eps=arg.eps, norm=arg.norm,
      variant=arg.variant, epochs=arg.epochs, batch_size=arg.batch, lr=arg.lr, momentum=0.9,
      weight_decay=1e-4, schedule=arg.schedule, attack_steps=arg.attack_steps,
      attack_rel_step=0.25,
      # "": the loss's own default (eval-mode BN for ERA/DGA as the authors, train otherwise).
      bn_mode_attack="", bn_mode_loss="",
      sigma=arg.sigma, num_noise=arg.num_noise, gamma=arg.gamma,
      beta_decay_every=arg.beta_decay_every, beta_decay=0.1,
      checkpoint_every=arg.checkpoint_every, keep_checkpoints=3, log_every=50,
      selection_split=arg.selection, select_size=arg.select_size,
      select_every=arg.select_every, select_steps=40, select_rel_step=0.1,
      select_batch_size=200, select_eps="")
  # Evaluated at the threat radius and twice it (the 2-eps column drives robust selection,
  # paper section 5), plus the training radius when that is another one.
  threat = arg.threat or arg.eps
  if arg.core or arg.core_dir:
    config.eps = threat
    config.compose = dict(core=arg.core, core_dir=arg.core_dir, select_at="")
  radius_set = {threat, radii.double_radius(threat), arg.eps}
  eval_radii = tuple(sorted(radius_set, key=radii.parse_radius))
  if arg.loss in ("cra", "noise"):
    # Certified evaluation (CERTIFY, paper section 4.2) at the L2 radius eps; the authors
    # certify the first 500 test images, hence eval_limit=500 in those configs.
    config.eval = dict(kind="certified", radii=eval_radii, norm=arg.norm, sigma=arg.sigma,
                       n0=100, n=arg.certify_n, alpha=0.001, noise_batch_size=1000, seed=0)
  else:
    config.eval = dict(kind="empirical", radii=eval_radii, conf_radii=(), norm=arg.norm,
                       n_iter=40, n_restarts=1, batch_size=500, seed=0)
  return config
