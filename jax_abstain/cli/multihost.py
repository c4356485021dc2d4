"""Starts one main job as several JAX processes joined by `jax.distributed`: N processes on this
machine (a test of the multi-host path), or prints an sbatch script for a SLURM cluster.

    # N processes on this machine (CPU collectives via gloo):
    jax-abstain-multihost --local=2 -- --config=mnist5k --workdir=runs/mh
    # A SLURM cluster: write the batch script, then submit it (one task per node):
    jax-abstain-multihost --sbatch=4 -- --config=cifar10_era:init=models/gowal \
        --workdir=/shared/runs/era > era.sbatch && sbatch era.sbatch

On SLURM (and Open MPI, Kubernetes, Cloud TPU) no launcher is needed: every task runs
``python -m jax_abstain.main <args> --coordinator_address=auto`` and
``jax.distributed.initialize()`` reads the process count, rank and coordinator from the
cluster's environment. The sbatch script asks for one task per node, requeues the job when it
is preempted, and has SLURM send SIGTERM two minutes before the end of the time limit: training
then saves a checkpoint at the next step and exits with status 143, evaluation stops after the
chunk it flushed (`jax_abstain.preemption`), and the requeued job resumes from the workdir.

Each process reads its own shard of the training data, the devices of all hosts form one
data-parallel mesh, process 0 writes metrics and the model, every process evaluates its own
range of the samples and process 0 merges the report (`evaluation.hosts`); the workdir must be
on a filesystem every host sees. In local mode output lines are prefixed with ``[i]``; if a
process fails, the others are stopped and the launcher exits with its status.
``python -m jax_abstain.cli.multihost`` is the same command; bad launcher arguments are one
line on stderr and exit status 2.
"""
import argparse
import shlex
import socket
import subprocess
import sys
import threading

from jax_abstain.cli import common as cli
from jax_abstain.errors import UserError

SBATCH = """#!/bin/bash
#SBATCH --job-name=jax-abstain
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --open-mode=append
#SBATCH --output=jax-abstain-%j.out
# One task per node; each task sees the node's accelerators. Add your partition, time limit,
# accelerators (e.g. --gpus-per-node) and environment set-up (module load, venv) here.
srun {python} -m jax_abstain.main {args} --coordinator_address=auto
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def sbatch_script(main_args, nodes: int, python: str = "python") -> str:
  """The SLURM batch script running the main job with `main_args` on `nodes` nodes."""
  return SBATCH.format(nodes=nodes, python=python, args=shlex.join(main_args))


def _relay(stream, prefix, out):
  for line in stream:
    out.write(f"[{prefix}] {line}")
    out.flush()


def commands(main_args, *, processes: int, port: int, python=sys.executable):
  """The argv of every local process, joined through a coordinator on localhost:`port`."""
  return [[python, "-m", "jax_abstain.main", *main_args,
           f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
           f"--process_id={rank}"] for rank in range(processes)]


def launch(main_args, *, processes: int, port: int) -> int:
  """Runs every process, relays their output, returns the first non-zero status (or 0)."""
  procs = []
  for rank, argv in enumerate(commands(main_args, processes=processes, port=port)):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threads = [threading.Thread(target=_relay, args=(p.stdout, rank, sys.stdout), daemon=True),
               threading.Thread(target=_relay, args=(p.stderr, rank, sys.stderr), daemon=True)]
    for t in threads:
      t.start()
    procs.append((p, threads))
  status = 0
  pending = [p for p, _ in procs]
  while pending:
    for p in list(pending):
      try:
        code = p.wait(timeout=0.5)
      except subprocess.TimeoutExpired:
        continue
      pending.remove(p)
      if code and not status:
        status = code
        for other in pending:       # a lone survivor would wait for its peers forever
          other.terminate()
  for _, threads in procs:
    for t in threads:
      t.join(timeout=5)
  return status


def _parser():
  parser = cli.ArgumentParser(prog="jax-abstain-multihost", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument("--local", type=int, help="number of processes on this machine")
  where.add_argument("--sbatch", type=int, metavar="NODES",
                     help="print a SLURM batch script for NODES nodes (one process each)")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (default: free)")
  parser.add_argument("main_args", nargs=argparse.REMAINDER,
                      help="-- then the arguments of python -m jax_abstain.main")
  return parser


def _launch(argv) -> int:
  args = _parser().parse_args(argv)
  main_args = args.main_args[1:] if args.main_args[:1] == ["--"] else args.main_args
  count = args.local if args.local is not None else args.sbatch
  if count < 1:
    raise UserError(f"--{'local' if args.local is not None else 'sbatch'}: expected at least 1, "
                    f"got {count}")
  if args.sbatch is not None:
    print(sbatch_script(main_args, args.sbatch), end="")
    return 0
  return launch(main_args, processes=args.local, port=args.port or _free_port())


def main(argv=None) -> int:
  """The console script ``jax-abstain-multihost`` (`common.entry`; the XLA:CPU setting is
  inherited by the processes it starts): the first non-zero exit status of the processes,
  or 0."""
  return cli.entry(_launch, argv)


if __name__ == "__main__":
  sys.exit(main())
