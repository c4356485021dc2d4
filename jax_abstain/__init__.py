"""jax-abstain: make classifiers robust only where they are accurate, abstain by robustness,
and compose a robust model with an accurate one.

    import jax_abstain as ja
    x, y = ja.data.load("synthetic", "train")
    model = ja.models.create("mlp", num_classes=3, in_features=2)
    x_adv = ja.attacks.apgd(model, x, y, key=jax.random.key(0), eps=0.1)

Command line: ``python -m jax_abstain.main --config=configs/synth.py --workdir=DIR``.
"""
__version__ = "0.1.0"

from jax_abstain import xla_cpu as _xla_cpu

# Before JAX starts its backends: XLA:CPU convolutions via Eigen, not YNNPACK (several times
# faster for this package's attacks and training on CPUs; see jax_abstain/xla_cpu.py).
XLA_CPU_SETUP = _xla_cpu.prefer_eigen_convolutions()
