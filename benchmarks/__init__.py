"""Benchmarks of jax-abstain against PyTorch on this machine: ``python -m benchmarks.run``."""
