"""`dskd senses`: build the sense dictionary from the teacher's hidden states."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Build the sense dictionary from the teacher's hidden states."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'senses' is not implemented yet (tracked in issue 5).")
