"""`dskd reproduce`: run the whole pipeline of a preset and write its tables and plots."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Run the whole pipeline of a preset and write its tables and plots."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'reproduce' is not implemented yet (tracked in issue 7).")
