"""A RobustBench-style evaluation in one call: clean and AutoAttack accuracy of a model on the
first `n_examples` test images, a leaderboard entry (JSON) and the per-sample report.

    from jax_abstain import models
    from jax_abstain.evaluation import benchmark
    net = models.load_robustbench("Carmon2019Unlabeled", dataset="cifar10", threat_model="Linf")
    result = benchmark.benchmark(net, "cifar10", "Linf", eps="8/255", n_examples=1000,
                                 out_dir="runs/bench", name="Carmon2019Unlabeled")
    result["clean_acc"], result["autoattack_acc"]          # percent

As RobustBench's ``benchmark`` (robustbench/eval.py): the first `n_examples` images of the
test split, AutoAttack (``version="standard"``: APGD-CE, APGD-T, FAB-T, Square) at `eps`, and
AutoAttack's own log, attack by attack: the clean accuracy, then after each attack the robust
accuracy left and the total time ("robust accuracy after APGD-CE: 62.00% (62/100), total time
12.3 s"). Each attack runs on the samples every earlier attack left robust, as AutoAttack does.
Robustness here is label-free, as everywhere in the project (docs/design.md, appendix A0): the
attacks move away from the model's own clean prediction, so the report's ``is_rob`` is also
known for misclassified images, and the robust accuracy is ``is_acc and is_rob`` (equal to
AutoAttack's, which attacks only correctly classified images with their labels).

The JSON entry holds RobustBench's leaderboard fields (``name``, ``dataset``,
``threat_model``, ``eps`` as text, ``architecture``, ``clean_acc``, ``autoattack_acc``; the
accuracies in percent, as its model cards) plus ``n_examples``, ``attacks`` (robust accuracy
after each) and ``report``. The report is the project's per-sample CSV
(``sample_idx,label,pred,is_acc,conf,is_rob@<eps>``, docs/design.md, "Contracts").
"""
import pathlib
import time

import jax
import numpy as np

from jax_abstain import files, radii, reports, validation
from jax_abstain.errors import UserError

THREATS = {"linf": ("Linf", "linf"), "l2": ("L2", "l2")}
# RobustBench's radii for its CIFAR leaderboards.
DEFAULT_EPS = {"Linf": "8/255", "L2": "0.5"}
ATTACKS = ("autoattack", "apgd-ce")


def _check(dataset, threat_model, eps, n_examples, attack, batch_size):
  """(threat model name, norm, eps text, eps value), or one UserError naming the problems."""
  problems = []
  threat = THREATS.get(str(threat_model).lower())
  if threat is None:
    problems.append(f"threat_model: expected Linf or L2, got {threat_model!r}")
    threat = ("Linf", "linf")
  text = DEFAULT_EPS[threat[0]] if eps is None else str(eps)
  try:
    value = radii.parse_radius(text, name="eps")
    if value <= 0:
      problems.append(f"eps: must be > 0, got {text}")
  except UserError as e:
    problems.append(str(e))
    value = 0.0
  if attack not in ATTACKS:
    problems.append(f"attack: expected one of {', '.join(ATTACKS)}, got {attack!r}")
  for label, v in (("n_examples", n_examples), ("batch_size", batch_size)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      problems.append(f"{label}: expected an integer >= 1, got {v!r}")
  if not isinstance(dataset, str) or not dataset:
    problems.append(f"dataset: expected a data set name, got {dataset!r}")
  if problems:
    raise UserError("benchmark: " + "; ".join(problems))
  return threat[0], threat[1], text, value


def _data(dataset, data, data_dir, n_examples):
  if data is None:
    from jax_abstain import data as data_lib  # pylint: disable=import-outside-toplevel
    data = data_lib.load(dataset, "test", path=data_dir)
  x, y = (np.asarray(a) for a in data)
  if len(x) < n_examples:
    raise UserError(f"benchmark: n_examples {n_examples} > the {len(x)} test images of {dataset}")
  return x[:n_examples].astype(np.float32), y[:n_examples].astype(np.int32)


def _clean(runner, x, batch_size):
  preds, confs = [], []
  for s in range(0, len(x), batch_size):
    p, c = runner.predict(x[s:s + batch_size])
    preds.append(p)
    confs.append(c)
  return np.concatenate(preds), np.concatenate(confs)


def _plan(attack, version, n_classes, n_iter, n_queries) -> list:
  """[(name, autoattack_run options)] in order: AutoAttack's ensemble, or APGD-CE-40."""
  from jax_abstain.attacks.autoattack import attack_names  # pylint: disable=import-outside-toplevel
  if attack == "apgd-ce":
    return [("apgd-ce", dict(attacks_to_run=("apgd-ce",), n_iter=40))]
  return [(n, dict(attacks_to_run=(n,), version=version, n_iter=n_iter, n_queries=n_queries))
          for n in attack_names(version, None, n_classes)]


def _attack_all(model, x, pred, keys, plan, eps, norm, batch_size, log):
  """Robust [N] bool after running the `plan` in turn on the survivors; logs after each."""
  from jax_abstain.attacks.autoattack import autoattack_run  # pylint: disable=import-outside-toplevel
  robust = np.ones(len(x), bool)
  after = {}
  for i, (name, options) in enumerate(plan):
    todo = np.flatnonzero(robust)
    for s in range(0, len(todo), batch_size):
      idx = todo[s:s + batch_size]
      res = autoattack_run(model, x[idx], pred[idx], key=keys[idx], eps=eps, norm=norm,
                           run_checks=(i == 0 and s == 0), **options)
      robust[idx] = np.asarray(res.robust)
    after[name] = log(name, robust)
  return robust, after


def _logger(progress, is_acc, start):
  say = print if progress else (lambda *_: None)
  say(f"clean accuracy: {100 * is_acc.mean():.2f}% ({int(is_acc.sum())}/{len(is_acc)})")

  def log(name, robust):
    kept = is_acc & robust
    say(f"robust accuracy after {name.upper()}: {100 * kept.mean():.2f}% "
        f"({int(kept.sum())}/{len(kept)}), total time {time.time() - start:.1f} s")
    return 100.0 * float(kept.mean())
  return log


def _write(out_dir, entry, columns) -> None:
  report = pathlib.Path(out_dir) / f"{entry['name']}.csv"
  reports.write_report(report, columns)
  entry["report"] = str(report)
  files.write_json(pathlib.Path(out_dir) / f"{entry['name']}.json", entry)


def benchmark(model, dataset: str = "cifar10", threat_model: str = "Linf", eps=None,
              n_examples: int = 10_000, attack: str = "autoattack", *, data=None, data_dir=None,
              out_dir=None, name: str = "model", architecture: str | None = None,
              version: str = "standard", n_iter: int = 100, n_queries: int = 5000,
              batch_size: int = 500, seed: int = 0, progress: bool = True) -> dict:
  """Clean and robust accuracy of `model` as RobustBench reports them (module docstring).

  Args:
    model: NNX model, x [B,H,W,C] in [0,1] -> logits [B,C] (run as an eval-mode copy).
    dataset: data set name for `jax_abstain.data.load` (``cifar10``, ``cifar100``, ...).
    threat_model: ``Linf`` or ``L2``.
    eps: radius in input units (``"8/255"`` or a float; default RobustBench's: Linf 8/255,
      L2 0.5).
    n_examples: the first `n_examples` test images (RobustBench: 10,000).
    attack: ``"autoattack"`` or ``"apgd-ce"`` (the paper's 40-step APGD-CE, quicker).
    data: (x [N,H,W,C] float in [0,1], y [N] int) instead of loading `dataset`.
    data_dir: the data set's path for `jax_abstain.data.load`.
    out_dir: folder for ``<name>.json`` and ``<name>.csv`` (None: nothing written).
    name, architecture: the entry's fields (default architecture: the class name).
    version, n_iter, n_queries: AutoAttack's settings (`jax_abstain.attacks.autoattack`).
    batch_size: images per batch; seed: keys ``fold_in(key(seed), sample_idx)``.
    progress: print AutoAttack's log lines.

  Returns:
    The leaderboard entry (dict, accuracies in percent).

  Raises:
    UserError: bad arguments (all named, before anything runs or is written), a data set with
      fewer images, labels the model cannot output, or an output folder that is a file.
  """
  threat, norm, eps_text, eps_value = _check(dataset, threat_model, eps, n_examples, attack,
                                             batch_size)
  if out_dir is not None:
    files.check_output(out_dir, "out_dir", folder=True)
  x, y = _data(dataset, data, data_dir, n_examples)
  validation.check_radius_in_box(eps_value, norm, int(np.prod(x.shape[1:])), "eps")
  pred, conf, robust, after = _run(model, x, y, attack, norm, eps_value, batch_size, seed,
                                   progress, dict(version=version, n_iter=n_iter,
                                                  n_queries=n_queries))
  is_acc = pred == y
  entry = {"name": name, "dataset": dataset, "threat_model": threat, "eps": eps_text,
           "architecture": architecture or type(model).__name__,
           "clean_acc": 100.0 * float(is_acc.mean()),
           ("autoattack_acc" if attack == "autoattack" else "apgd_ce_acc"):
               100.0 * float(np.mean(is_acc & robust)),
           "n_examples": int(n_examples), "attack": attack, "robust_acc_after": after,
           "report": None}
  if out_dir is not None:
    _write(out_dir, entry, {"sample_idx": np.arange(len(x)), "label": y, "pred": pred,
                            "is_acc": is_acc, "conf": conf, f"is_rob@{eps_text}": robust})
  return entry


def _run(model, x, y, attack, norm, eps, batch_size, seed, progress, aa_options):
  """(pred, conf, robust, robust accuracy after each attack) of the benchmark."""
  from jax_abstain.evaluation import runner as runner_lib, summary  # pylint: disable=import-outside-toplevel
  run = runner_lib.ModelRunner(model, norm=norm)
  start = time.time()
  pred, conf = _clean(run, x, batch_size)
  n_classes = int(np.asarray(run.logits(x[:1])).shape[-1])
  summary.check_labels(y, n_classes, "benchmark labels")
  plan = _plan(attack, aa_options["version"], n_classes, aa_options["n_iter"],
               aa_options["n_queries"])
  keys = runner_lib.sample_keys(jax.random.key(seed), np.arange(len(x)))
  robust, after = _attack_all(run.model, x, pred, keys, plan, eps, norm, batch_size,
                              _logger(progress, pred == y, start))
  return pred, conf, robust, after
