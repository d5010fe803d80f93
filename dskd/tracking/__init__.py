"""Weights & Biases beyond the training curves: reading offline run files, artifacts with lineage and
the evaluation run (see docs/training.md and docs/evaluation.md)."""
