"""Shared pytest set-up: CPU-only JAX, a bounded hypothesis profile, the repo on sys.path."""
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax_abstain  # noqa: E402

# What the command lines do first; the tests measure the same XLA:CPU kernels users run.
jax_abstain.use_eigen_convolutions()

from hypothesis import HealthCheck, settings  # noqa: E402

# JIT compilation makes the first example slow; deadlines would flake on a 2-core machine.
settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
