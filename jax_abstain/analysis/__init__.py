"""Analysis of per-sample reports: tables, Pareto plots, markdown."""
