"""Starts one main job as several JAX processes (hosts) joined by `jax.distributed`.

    # N processes on this machine (a test of the multi-host path; CPU collectives via gloo):
    jax-abstain-multihost --local=2 -- --config=mnist5k --workdir=runs/mh
    # Every host of a cluster over ssh (same checkout and a shared workdir on every host;
    # the first host is the coordinator):
    jax-abstain-multihost --hosts=node0,node1,node2,node3 --port=1234 -- \
        --config=cifar10_era:init=models/gowal,path=/data/c10.tar.gz --workdir=/shared/runs/era
    # SLURM / Open MPI / Kubernetes: no launcher needed, jax reads the cluster's environment:
    srun python -m jax_abstain.main --coordinator_address=auto --config=... --workdir=...

Each process runs ``python -m jax_abstain.main <args> --coordinator_address=HOST:PORT
--num_processes=N --process_id=i``; it reads its own shard of the training data, the devices of
all hosts form one data-parallel mesh, process 0 writes metrics, the model and the reports,
and the checkpoints are written jointly (the workdir must be on a filesystem every host sees).
Output lines are prefixed with ``[i]``. If a process fails, the others are stopped and the
launcher exits with its status. ``python -m jax_abstain.cli.multihost`` is the same command;
bad launcher arguments are one line on stderr and exit status 2.
"""
import argparse
import pathlib
import shlex
import socket
import subprocess
import sys
import threading

from jax_abstain.cli import common as cli
from jax_abstain.errors import UserError


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _relay(stream, prefix, out):
  for line in stream:
    out.write(f"[{prefix}] {line}")
    out.flush()


def commands(main_args, *, hosts, port, python=sys.executable):
  """The command of every process: (host or None for this machine, argv)."""
  coordinator = f"{hosts[0] or 'localhost'}:{port}"
  out = []
  for rank, host in enumerate(hosts):
    argv = [python, "-m", "jax_abstain.main", *main_args, f"--coordinator_address={coordinator}",
            f"--num_processes={len(hosts)}", f"--process_id={rank}"]
    if host:
      argv = ["ssh", host, f"cd {shlex.quote(str(pathlib.Path.cwd()))} && {shlex.join(argv)}"]
    out.append((host, argv))
  return out


def launch(main_args, *, hosts, port) -> int:
  """Runs every process, relays their output, returns the first non-zero status (or 0)."""
  procs = []
  for rank, (_, argv) in enumerate(commands(main_args, hosts=hosts, port=port)):
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
  where.add_argument("--hosts", help="comma-separated hosts, one process each (ssh)")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (default: free)")
  parser.add_argument("main_args", nargs=argparse.REMAINDER,
                      help="-- then the arguments of python -m jax_abstain.main")
  return parser


def _launch(argv) -> int:
  args = _parser().parse_args(argv)
  main_args = args.main_args[1:] if args.main_args[:1] == ["--"] else args.main_args
  if args.local is not None and args.local < 1:
    raise UserError(f"--local: expected at least 1 process, got {args.local}")
  hosts = [None] * args.local if args.local else [h for h in args.hosts.split(",") if h]
  if not hosts:
    raise UserError(f"--hosts: expected comma-separated host names, got {args.hosts!r}")
  port = args.port or _free_port()
  return launch(main_args, hosts=hosts, port=port)


def main(argv=None) -> int:
  """The console script ``jax-abstain-multihost`` (`common.entry`; the XLA:CPU setting is
  inherited by the processes it starts): the first non-zero exit status of the processes,
  or 0."""
  return cli.entry(_launch, argv)


if __name__ == "__main__":
  sys.exit(main())
