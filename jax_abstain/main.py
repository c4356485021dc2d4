"""``python -m jax_abstain.main``: the main job's command line (`jax_abstain.cli.main`).

Kept at this path because it is the Flax examples' convention for the entry point; the code
lives in the command-line layer.
"""
from jax_abstain.cli.main import main

if __name__ == "__main__":
  main()
