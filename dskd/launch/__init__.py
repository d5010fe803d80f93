"""Orchestration on top of the stages: `dskd reproduce` (with its stage stamps), `dskd ablate` and SLURM
job submission."""
