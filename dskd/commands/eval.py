"""`dskd eval`: evaluate the teacher and students; write results and tables."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Evaluate the teacher and students; write results and tables."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'eval' is not implemented yet (tracked in issue 7).")
