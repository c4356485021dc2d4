"""The paper's Figure 1 experiment, end to end (mode ``figure1``, config ``configs/synth.py``).

    results = figure1.run(config, workdir)

Trains every model of ``config.models`` (std, TRADES, ERA, and the ERA branch trained at
2 eps) on the three-Gaussian set, evaluates each with APGD-CE at eps and 2 eps into a
per-sample report, composes H = ((branch, S_ERI at 2 eps), core) from the reports (eq. 12), and
writes into the workdir:

  results.json            per model nat_acc, rob_acc, rob_inacc (percent), the four splits,
                          the same at 2 eps; ``composition`` with nat_acc, rob_acc, rob_sel
  reports/<model>.csv     per-sample reports (DESIGN.md format)
  decision_regions.png    decision regions of std, TRADES, ERA and H with the points marked
  checkpoints/<model>/    orbax checkpoints (a rerun resumes and skips finished work)
"""
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jax_abstain import compose, data, files, metrics, models, radii
from jax_abstain.evaluation import empirical as evaluate
from jax_abstain.analysis import plots
from jax_abstain.jobs import train
from jax_abstain.errors import UserError


def model_train_config(config, name: str) -> ml_collections.ConfigDict:
  """The ``train`` config of one model: shared settings overridden by ``models.<name>``."""
  spec = config.models[name]
  cfg = ml_collections.ConfigDict(config.train.to_dict())
  for key, value in spec.items():
    if key != "eps_factor":
      if key not in cfg:
        raise UserError(f"config.models.{name}.{key}: not a training setting; "
                        f"known: {', '.join(sorted(cfg))}")
      cfg[key] = value
  factor = spec.get("eps_factor", 1)
  cfg.eps = radii.format_radius(factor * radii.parse_radius(config.eps, name="config.eps")) \
      if factor != 1 else radii.format_radius(config.eps)
  return cfg


def _summary(cols: dict, eps_text: str) -> dict:
  out = metrics.summary(cols["is_acc"], cols[f"is_rob@{eps_text}"])
  return {k: (round(v, 2) if isinstance(v, float) else {a: round(b, 2) for a, b in v.items()})
          for k, v in out.items()}


def _build_model(config):
  m = config.model
  return models.create(m.name, num_classes=m.num_classes, seed=config.seed,
                       in_features=m.in_features, hidden=tuple(m.hidden))


def run(config, workdir) -> dict:
  """Runs the experiment; returns the dict also written to ``results.json``."""
  workdir = pathlib.Path(workdir)
  eps_text = radii.format_radius(config.eps)
  eps2_text = radii.double_radius(eps_text)
  eps2 = radii.parse_radius(eps2_text)
  for role in ("branch", "core"):
    if config.compose[role] not in config.models:
      raise UserError(f"config.compose.{role}: {config.compose[role]!r} is not one of "
                      f"config.models ({', '.join(config.models)})")
  d = config.data
  x_train, y_train = data.load(d.name, "train", n=d.n, seed=d.data_seed)
  x_eval, y_eval = data.load(d.name, d.eval_split, n=d.n, seed=d.data_seed)
  eval_key = jax.random.key(config.seed)

  trained, cols, results = {}, {}, {"eps": eps_text, "eval_split": d.eval_split, "models": {}}
  for i, name in enumerate(config.models):
    cfg = model_train_config(config, name)
    logging.info("model %s: loss=%s eps=%s beta=%s", name, cfg.loss, cfg.eps, cfg.beta)
    model = _build_model(config)
    train.fit(model, x_train, y_train, cfg, workdir=workdir, name=name, seed=config.seed)
    model.eval()   # attacks and plots use BN running statistics, dropout off
    trained[name] = model
    cols[name] = evaluate.evaluate_model(
        model, x_eval, y_eval, radii=[eps_text, eps2_text], key=eval_key, norm=config.norm,
        n_iter=config.eval.n_iter, n_restarts=config.eval.n_restarts,
        batch_size=config.eval.batch_size, report_path=workdir / "reports" / f"{name}.csv")
    results["models"][name] = {"loss": cfg.loss, "train_eps": cfg.eps, "beta": cfg.beta,
                               **_summary(cols[name], eps_text),
                               "at_2eps": _summary(cols[name], eps2_text)}

  select_at = [config.compose.select_at] if config.compose.select_at else None
  branch, core = config.compose.branch, config.compose.core
  comp, sel, first_rob_acc, shown = compose.compose_reports_per_sample(
      [cols[branch], cols[core]], eps_text, select_at)
  results["composition"] = {"branch": branch, "core": core,
                            **comp.summary(sel, first_rob_acc), "select_at": shown[0]}
  if "era" in config.models and branch != "era":
    # For comparison: the ERA model trained at eps itself as the branch (still selected at 2 eps).
    alt = compose.compose_reports([cols["era"], cols[core]], eps_text, select_at)
    results["composition_branch_trained_at_eps"] = {"branch": "era", "core": core, **alt}

  _plot(config, workdir, trained, cols, comp, x_eval, eps_text, eps2)
  files.write_json(workdir / "results.json", results)
  print(format_table(results))
  return results


def _plot(config, workdir, trained, cols, comp, x_eval, eps_text, eps2):
  """decision_regions.png: std, TRADES, ERA (first three models) and the composition H."""
  points = jnp.asarray(plots.grid_points(config.plot.grid))
  panels = []
  for name in [n for n in ("std", "trades", "era") if n in trained]:
    regions = jax.jit(lambda p, m=trained[name]: jnp.argmax(m(p), -1))(points)
    title = "L_TRADES" if name == "trades" else f"L_{name}"
    panels.append((title, regions, cols[name]["is_acc"], cols[name][f"is_rob@{eps_text}"], None))
  # H on the grid by live inference (eq. 12): the branch answers where APGD at the selector
  # radius does not flip it; the hatched area is where the core answers.
  branch, core = trained[config.compose.branch], trained[config.compose.core]
  select_at = radii.parse_radius(config.compose.select_at) if config.compose.select_at else eps2
  selector = compose.robustness_selector(branch, eps=select_at, key=jax.random.key(config.seed + 1),
                                         n_iter=config.eval.n_iter)
  h_pred, answered_by = jax.jit(lambda p: compose.predict([branch, core], [selector], p))(points)
  panels.append(("H = (ERA branch, S@2eps) + std core", h_pred, comp.is_acc, comp.is_rob,
                 np.asarray(answered_by) == 1))
  plots.decision_regions(workdir / "decision_regions.png", panels, x_eval,
                         num_classes=config.model.num_classes, eps=radii.parse_radius(eps_text),
                         grid=config.plot.grid)


def format_table(results: dict) -> str:
  """The printed summary table (percent of the evaluated set)."""
  lines = [f"Figure 1 at eps={results['eps']} (evaluated on the {results['eval_split']} split)",
           f"{'model':<12}{'nat_acc':>9}{'rob_acc':>9}{'rob_inacc':>11}{'rob_acc@2eps':>14}"]
  order = sorted(results["models"], key=lambda n: (["std", "trades", "era"] + [n]).index(n))
  for name in order:
    m = results["models"][name]
    lines.append(f"{name:<12}{m['nat_acc']:>9.2f}{m['rob_acc']:>9.2f}{m['rob_inacc']:>11.2f}"
                 f"{m['at_2eps']['rob_acc']:>14.2f}")
  c = results["composition"]
  lines.append(f"composition H = ({c['branch']}, S@{c['select_at']}) + {c['core']}: "
               f"nat_acc {c['nat_acc']:.2f}  rob_acc {c['rob_acc']:.2f}  rob_sel {c['rob_sel']:.2f}")
  return "\n".join(lines)
