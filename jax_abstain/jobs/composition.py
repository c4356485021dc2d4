"""The composition a train job ends with (``config.compose``): the trained model is the branch.

    python -m jax_abstain.main --config=configs/cifar10_era.py --workdir=runs/c10
    results = composition.run(job, workdir, x, y, idx)    # after the branch's report

The core (``compose.core``, a RobustBench name of the job's leaderboard, or ``compose.core_dir``)
is evaluated with the branch's `EvalConfig` on the same samples into
``reports/<core>.csv``; branch and core are composed (paper eq. 12) at the threat radius
``job.eps``, selecting by the branch's robustness at ``compose.select_at`` (default 2 eps,
sound: docs/design.md, appendix A6). Written into the workdir:

  table1.md, table1.csv   the paper's Table 1 row: the core alone and the composition, natural
                          and robust accuracy at eps (plus robust selection and commit
                          precision of the composition)
  report/                 every table and Fig. 2-4 of the two reports (`jobs.report.run`)
"""
import pathlib

from jax_abstain import compose, files, metrics, models, radii, reports
from jax_abstain.analysis import markdown, tables
from jax_abstain.jobs import evaluate as evaluate_job, inputs
from jax_abstain.jobs import report as report_job

TABLE1 = ["model", "eps", "nat_acc", "rob_acc", "rob_sel", "commit_prec"]


def core_name(job) -> str:
  """The core's report name: its RobustBench name, or ``core`` (``core_<x>`` if that is the
  branch's)."""
  name = job.compose.core or "core"
  return name if name != job.name else f"core_{name}"


def _core_model(job):
  c = job.compose
  if c.core:
    return inputs.robustbench_model(c.core, job.data.name, job.model.threat_model,
                                    c.options)[0]
  return models.load(c.core_dir)


def table1_rows(branch: dict, core: dict, eps: str, select_at: str, names) -> list:
  """Table 1's rows: the core alone, then branch + core selected at `select_at`.

  Args:
    branch, core: report columns (`reports.read_report`) of the same samples.
    eps: the threat radius; select_at: the selector's radius.
    names: (branch name, core name).

  Returns:
    Two dicts with `TABLE1`'s keys (percent, rounded to 2 decimals as `compose.compose_reports`;
    rob_sel and commit_prec empty for the core).
  """
  both = compose.compose_reports([branch, core], eps, [select_at], names=list(names))
  is_acc = compose.model_accuracy(core)
  _, is_rob = compose.model_robustness(core, eps, certified=False)
  return [{"model": names[1], "eps": eps, "nat_acc": round(metrics.natural_accuracy(is_acc), 2),
           "rob_acc": round(metrics.robust_accuracy(is_acc, is_rob), 2), "rob_sel": "",
           "commit_prec": ""},
          {"model": f"{names[0]} + {names[1]} (select at {select_at})", "eps": eps,
           "nat_acc": both["nat_acc"], "rob_acc": both["rob_acc"], "rob_sel": both["rob_sel"],
           "commit_prec": both["commit_prec"]}]


def run(job, workdir, x, y, idx) -> dict:
  """Evaluates the core, composes it with the branch report ``reports/<job.name>.csv``, writes
  Table 1 and the report folder.

  Args:
    job: the checked train job with a ``compose`` section.
    workdir: its run folder, holding the branch's report.
    x, y, idx: the evaluated samples [N, H, W, C], labels [N] and their indices in the split.

  Returns:
    {"core": name, <name>: the core's summary, "composition": eq. 12 summary, "table1": rows,
    "report": "report"}.
  """
  workdir = pathlib.Path(workdir)
  name = core_name(job)
  select_at = job.compose.select_at or radii.double_radius(job.eps)
  summary = evaluate_job.report_in_workdir(_core_model(job), x, y, job.eval, workdir, name,
                                           sample_idx=idx)
  paths = [workdir / "reports" / f"{n}.csv" for n in (job.name, name)]
  branch, core = (reports.read_report(p) for p in paths)
  rows = table1_rows(branch, core, job.eps, select_at, (job.name, name))
  tables.write_csv(workdir / "table1.csv", rows)
  text = markdown.table(rows, TABLE1)
  files.atomic_write(workdir / "table1.md", f"# Table 1: {job.data.name}, eps {job.eps}\n\n"
                                            f"{text}\n")
  print(text)
  report_job.run([str(p) for p in paths], workdir / "report", eps=job.eps, core=name,
                 names=[job.name, name])
  return {"core": name, name: summary, "table1": rows, "report": "report",
          "composition": compose.compose_reports([branch, core], job.eps, [select_at])}
