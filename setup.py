"""jax-abstain: robust only where accurate -- ERA/CRA fine-tuning, robustness-indicator
abstain models and compositional architectures in JAX/Flax.

    pip install -e .              # CPU
    pip install -e ".[cuda12]"    # NVIDIA GPUs (CUDA 12)
    pip install -e ".[test]"      # pytest, chex, hypothesis
    pip install -e ".[port]"      # PyTorch for porting checkpoints: install the torch build
                                  # of your choice first (CPU or CUDA); any torch>=2.1 works.
"""
import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements():
  lines = (_HERE / "requirements.txt").read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


setuptools.setup(
    name="jax-abstain",
    version="0.1.0",
    description=("Robust only where accurate: ERA/CRA fine-tuning, robustness-indicator "
                 "abstain models and compositional architectures in JAX/Flax."),
    long_description=(_HERE / "README.md").read_text() if (_HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["jax_abstain", "jax_abstain.*"]),
    install_requires=_requirements(),
    extras_require={
        "cuda12": ["jax[cuda12]>=0.4.35"],
        "test": ["pytest>=7.4", "chex>=0.1.87", "hypothesis>=6.90", "pytest-xdist>=3.5"],
        "port": ["torch>=2.1"],
        "tfds": ["tensorflow-datasets>=4.9"],
        "tensorboard": ["tensorboardX>=2.6"],
    },
    entry_points={"console_scripts": [
        "jax-abstain=jax_abstain.main:run",
        "jax-abstain-compose=jax_abstain.compose:run",
        "jax-abstain-port=jax_abstain.port:run",
    ]},
)
