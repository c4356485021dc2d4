"""Evaluation: per-sample reports of attacks and certification."""
