"""jax-abstain: make classifiers robust only where they are accurate, abstain by robustness,
and compose a robust model with an accurate one.

    import jax, jax_abstain as ja
    ja.use_eigen_convolutions()          # optional, before any JAX computation (faster on CPUs)
    x, y = ja.data.load("synthetic", "train")
    model = ja.models.create("mlp", num_classes=3, in_features=2)
    x_adv = ja.attacks.apgd(model, x, y, key=jax.random.key(0), eps=0.1)

Importing the package changes nothing outside it: subpackages load on first use, and the
XLA:CPU setting is the explicit call above (the command lines make it). Layers and owners:
docs/design.md. Command line: ``python -m jax_abstain.main --config=synth --workdir=DIR``.
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = ("analysis", "attacks", "cascades", "cli", "compose", "configs", "data",
               "evaluation", "files", "jobs", "losses", "metrics", "models", "porting", "radii",
               "reports", "selectors", "smoothing", "soundness", "training", "validation",
               "xla_cpu")


def use_eigen_convolutions() -> str:
  """Makes XLA:CPU run convolutions with Eigen rather than YNNPACK (`xla_cpu`); call it before
  any JAX computation. Returns what happened ("set", "opted out", ...)."""
  from jax_abstain import xla_cpu  # pylint: disable=import-outside-toplevel
  return xla_cpu.prefer_eigen_convolutions()


def __getattr__(name):
  # PEP 562: `ja.data.load(...)` works without importing every subpackage (and JAX) up front.
  if name in _SUBMODULES:
    return importlib.import_module(f"jax_abstain.{name}")
  raise AttributeError(f"module 'jax_abstain' has no attribute {name!r}")
