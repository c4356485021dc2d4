"""What a job reads that may have to be downloaded: its data and its RobustBench models.

    job = schema.check(config)
    inputs.fetch(job)                     # downloads, ports, checks; nothing in the workdir
    path = workdir.prepare(path, job)     # only now config.json and environment.json
    model, arch, options = inputs.robustbench_model("Carmon2019Unlabeled", "cifar10", "Linf")

`fetch` runs after the config check and before the workdir is touched (docs/design.md, "Data
flow of a job"), so that no network, a wrong checksum, an unknown or unbuildable RobustBench
name stops the job with one line before
anything is written: the data archive (`data.fetch`: the official CIFAR archive when no path
is given) and every RobustBench model the job starts from or composes with
(`models.load_robustbench`: downloaded, ported on first use and cached with a manifest).
Later loads are cache hits.
"""
from jax_abstain import data, models
from jax_abstain.errors import UserError

def robustbench_model(name: str, dataset: str, threat_model: str, options=None, *,
                      progress: bool = True):
  """RobustBench model `name` of leaderboard (`dataset`, `threat_model`), as a model to train.

  Args:
    name: the RobustBench name, e.g. ``Carmon2019Unlabeled``.
    dataset: ``cifar10`` or ``cifar100``.
    threat_model: ``Linf`` or ``L2``.
    options: size overrides of `models.load_robustbench` (``depth``, ``widen_factor``,
      ``width``; None: the published sizes).
    progress: show download progress bars.

  Returns:
    (eval-mode NNX model, registry architecture, constructor options) -- the architecture and
    options of the cached port's manifest, what `models.save` needs for a fine-tuned copy.

  Raises:
    UserError: an unknown or unsupported name, a download or port that fails.
  """
  model = models.load_robustbench(name, dataset=dataset, threat_model=threat_model,
                                  progress=progress, **dict(options or {}))
  manifest = models.robustbench_manifest(name, dataset=dataset, threat_model=threat_model)
  return model, manifest["architecture"], dict(manifest["options"])


def _robustbench_names(job) -> list:
  """[(config field, RobustBench name, size options)] the job loads."""
  named = [("config.model.robustbench", job.model.robustbench, job.model.options)]
  if job.compose is not None:
    named.append(("config.compose.core", job.compose.core, job.compose.options))
  return [n for n in named if n[1]]


def fetch(job, *, progress: bool = True) -> None:
  """Downloads and checks what `job` reads, before its workdir is written.

  Args:
    job: the checked `jobs.schema.Job`.
    progress: show download progress bars.

  Raises:
    UserError: one line: the data or a model cannot be downloaded (offline: which file to put
      where) or fails its checksum, or a model does not port.
  """
  data.fetch(job.data.name, job.data.path or None, progress=progress)
  for field, name, options in _robustbench_names(job):
    try:   # the leaderboard is the data set's, so the classes match
      robustbench_model(name, job.data.name, job.model.threat_model, options,
                        progress=progress)
    except UserError as e:
      raise UserError(f"{field}: {e}") from None
