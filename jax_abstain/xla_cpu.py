"""XLA:CPU setting that makes this package's convolution networks fast on CPUs.

    import jax_abstain
    jax_abstain.use_eigen_convolutions()   # library users: once, before any JAX computation

`prefer_eigen_convolutions()` adds ``--xla_cpu_experimental_ynn_fusion_type=`` to
``XLA_FLAGS`` before JAX starts its backends. Nothing calls it at import: `import jax_abstain`
leaves ``XLA_FLAGS`` alone. Every command line (`jax_abstain.cli`) calls it first, and library
users call `jax_abstain.use_eigen_convolutions()`, which calls it (docs/design.md,
"Decisions").

Why: jax 0.10's XLA:CPU hands convolutions to YNNPACK ("ynn_fusion" in compiled HLO), whose
3x3 kernels run most of our layer shapes several times slower than its Eigen ones on this
project's 2-core AVX2 CPU (the 128x26x26x32 -> 32 layer of the digits CNN: 30 GFLOP/s with
YNNPACK, 187 with Eigen, 287 with PyTorch/oneDNN; BENCHMARKS.md section 8, `python -m
benchmarks.run --only profile`). With an empty YNNPACK fusion type XLA runs convolutions with
Eigen, and APGD-CE on the digits CNN went from 0.46x to 1.06x the speed of torchattacks
(BENCHMARKS.md section 5). The results are the same function up to float rounding. The empty value turns
every YNNPACK fusion off, matmuls included; keeping YNNPACK for the others (eltwise, reduce,
dot) and dropping only convolutions was about 15% slower for APGD-CE on ResNet-18 (a one-off
measurement, not a benchmark here).

When it does nothing (and why):
  * ``JAX_ABSTAIN_KEEP_XLA_FLAGS=1`` in the environment: the user opted out.
  * ``XLA_FLAGS`` already sets ``xla_cpu_experimental_ynn_fusion_type``: the user's choice wins.
  * jaxlib outside `TESTED_JAXLIB`: XLA aborts the process on a flag it does not know, and this
    experimental flag may be renamed; set it by hand after checking that your jaxlib has it.
  * JAX's backends already started (a computation ran before the call): XLA read its flags
    then; a warning says how to get the setting (make the call first, or set ``XLA_FLAGS``
    yourself).
"""
import importlib.metadata
import os
import sys
import warnings

FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{FLAG_NAME}="
OPT_OUT = "JAX_ABSTAIN_KEEP_XLA_FLAGS"
# (major, minor) versions of jaxlib known to have FLAG (checked: 0.10.2).
TESTED_JAXLIB = ((0, 10),)


def _jaxlib_minor():
  try:
    major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
    return int(major), int(minor)
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return None


def _backends_started() -> bool:
  bridge = sys.modules.get("jax._src.xla_bridge")   # not imported -> certainly not started
  return bool(bridge is not None and bridge.backends_are_initialized())


def prefer_eigen_convolutions(environ=None) -> str:
  """Adds FLAG to ``environ["XLA_FLAGS"]`` (default `os.environ`) unless a reason above applies.

  Returns what happened: "set", "opted out", "user setting", "untested jaxlib" or
  "backends started".
  """
  environ = os.environ if environ is None else environ
  flags = environ.get("XLA_FLAGS", "")
  if environ.get(OPT_OUT, "") not in ("", "0"):
    return "opted out"
  if FLAG_NAME in flags:
    return "user setting"
  if _jaxlib_minor() not in TESTED_JAXLIB:
    return "untested jaxlib"
  if _backends_started():
    import jax  # pylint: disable=import-outside-toplevel
    if jax.default_backend() == "cpu":
      warnings.warn(
          "JAX started before jax_abstain.use_eigen_convolutions() was called, so XLA:CPU keeps "
          "its YNNPACK convolutions (several times slower for attacks here); call it before "
          f"running any JAX computation, or set XLA_FLAGS={FLAG}", RuntimeWarning, stacklevel=3)
    return "backends started"
  environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
  return "set"
