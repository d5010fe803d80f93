"""Weights & Biases beyond the training curves: the session (online or offline), reading offline run
files, and artifacts with lineage (see docs/training.md and docs/evaluation.md)."""
