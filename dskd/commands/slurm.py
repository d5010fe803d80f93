"""`dskd slurm`: render and submit multi-node SLURM jobs."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Render and submit multi-node SLURM jobs."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'slurm' is not implemented yet (tracked in issue 8).")
