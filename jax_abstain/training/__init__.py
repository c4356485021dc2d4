"""The training loop behind `jax_abstain.train`: `step` (losses, optimizer, SPMD step, mesh),
`loop` (grain input, checkpoints, resume, selection), `selection` (validation),
`distributed` (multi-host), `writer` (metrics, progress)."""
