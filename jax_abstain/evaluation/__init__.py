"""Evaluation: per-sample reports of attacks (empirical) and randomized smoothing (certified).

    from jax_abstain import evaluation
    cfg = evaluation.EvalConfig.from_config({"radii": ("1/255", "2/255")})
    summary = evaluation.evaluate(model, x, y, cfg, report_path="runs/era/reports/era.csv")

`evaluate` is the one entry of both kinds (docs/design.md, Contracts): the evaluate and train
jobs and the certify command line call it. Modules: `config` (`EvalConfig`), `runner` (jitted
model runner, report loop, model identity), `empirical` (`evaluate_model`), `certified`
(`certify_report`, `summarize`), `live` (live compositions), `summary` (one result shape).
"""
import math

from jax_abstain.evaluation.config import EvalConfig


def evaluate(model, x, y, cfg, *, report_path, sample_idx=None, progress: bool = True) -> dict:
  """Writes (or completes, or re-reads) the per-sample report of `model` and summarises it.

  Args:
    model: NNX model in eval mode, x [B, ...] in [0, 1] -> logits [B, C].
    x: [N, ...] float32 in [0, 1]; y: [N] int labels.
    cfg: an `EvalConfig` (or a mapping of its fields, checked by `EvalConfig.from_config`);
      ``cfg.kind`` chooses `empirical.evaluate_model` (attacks at ``cfg.radii``) or
      `certified.certify_report` (CERTIFY; ``cfg.radii`` are the L2 radii of the summary).
    report_path: the report CSV (resumable; ``<report>.settings.json`` beside it).
    sample_idx: [N] distinct indices of the samples in their split (default 0..N-1); keys are
      ``fold_in(jax.random.key(cfg.seed), sample_idx)``.
    progress: show a tqdm progress bar.

  Returns:
    The summary of `summary.summarize` (percent floats, unrounded).

  Raises:
    UserError: bad settings or inputs, an empirical evaluation without radii, or a report
      started with other settings (or another model).
  """
  import jax  # pylint: disable=import-outside-toplevel
  from jax_abstain.evaluation import certified, empirical, summary  # pylint: disable=import-outside-toplevel
  cfg = cfg if isinstance(cfg, EvalConfig) else EvalConfig.from_config(cfg)
  key = jax.random.key(cfg.seed)
  if cfg.certified:
    from jax_abstain import radii, validation  # pylint: disable=import-outside-toplevel
    for text in cfg.radii:   # the summary's L2 radii
      validation.check_radius_in_box(radii.parse_radius(text), "l2",
                                     int(math.prod(jax.numpy.shape(x)[1:])),
                                     f"eval.radii {text}")
    columns = certified.certify_report(
        model, x, y, report_path, key=key, sigma=cfg.sigma, n0=cfg.n0, n=cfg.n, alpha=cfg.alpha,
        batch_size=cfg.noise_batch_size, indices=sample_idx, progress=progress)
  else:
    columns = empirical.evaluate_model(
        model, x, y, radii=cfg.radii, key=key, norm=cfg.norm, n_iter=cfg.n_iter,
        n_restarts=cfg.n_restarts, conf_radii=cfg.conf_radii, batch_size=cfg.batch_size,
        report_path=report_path, progress=progress, sample_idx=sample_idx, attack=cfg.attack,
        aa_options=cfg.autoattack if cfg.attack == "autoattack" else None)
  return summary.summarize(columns, cfg)


__all__ = ["EvalConfig", "evaluate"]
