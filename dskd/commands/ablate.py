"""`dskd ablate`: run an ablation grid locally and write its summary table and plot."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Run an ablation grid locally and write its summary table and plot."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'ablate' is not implemented yet (tracked in issue 10).")
