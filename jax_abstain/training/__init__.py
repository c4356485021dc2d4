"""Training with the paper's losses (std, TRADES, MART, ERA, DGA, noise, CRA), data parallel,
resumable.

    import jax_abstain as ja
    from jax_abstain import training
    x, y = ja.data.load("synthetic", "train")
    model = ja.models.create("mlp", num_classes=3, in_features=2)
    config = {"loss": "era", "eps": "0.1", "beta": 0.2, "epochs": 2, "batch_size": 10,
              "lr": 0.03, "schedule": "constant"}
    model = training.fit(model, x, y, config, workdir="/tmp/era", name="era", progress=False)

`fit` trains in place and returns the model; a rerun with the same workdir resumes from the
last checkpoint (the same parameters as an uninterrupted run). Settings are a
`TrainConfig` or any mapping of its fields; the rest take the paper's defaults
(`training.config`).

Modules: `config` (settings, defaults, checks), `objectives` (one function per loss),
`step` (forward, loss, optimizer and the jitted SPMD step, mesh), `loop` (grain input,
checkpoints, resume, selection; `loop.check_batch_size` is the one batch-vs-devices check),
`selection` (validation), `checkpointing` (orbax), `distributed` (multi-host), `writer`
(metrics, progress). docs/design.md places them in the layers.
"""
from jax_abstain.training.config import TrainConfig

__all__ = ["TrainConfig", "fit"]


def fit(model, x, y, config, *, workdir, name: str, seed: int = 0, progress: bool = True,
        augment: str = "none", validation=None, mesh=None):
  """Trains `model` in place on (x, y) and returns it; resumes from `workdir`.

  Args:
    model: an NNX model (its parameters and batch statistics are updated in place).
    x: [N, ...] float32 inputs in [0, 1] (NHWC images or [N, D] vectors); y: [N] int32 labels.
    config: a `TrainConfig` or a mapping (dict, ConfigDict) of its fields.
    workdir: the run folder (``checkpoints/<name>``, ``metrics_<name>.jsonl``).
    name: the model's name within the run.
    seed: data order, augmentation and attack randomness.
    progress: show a progress bar.
    augment: the augmentation name (`jax_abstain.data.augment`).
    validation: (x_val, y_val) for model selection every ``select_every`` epochs, or None.
    mesh: a ``("data",)`` mesh (`step.data_mesh`; default: every device).

  Raises:
    UserError: bad settings (all of them, one line each), a batch that does not fit the
      devices or the data, a workdir holding another model's checkpoints.
    FloatingPointError: a diverging run.
  """
  from jax_abstain.training import loop  # orbax and grain load only when training runs
  return loop.train(model, x, y, config, workdir=workdir, name=name, seed=seed,
                    progress=progress, augment=augment, validation=validation,
                    mesh=mesh)["model"]
