"""`dskd train`: distil a student with KD or DSKD."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Distil a student with KD or DSKD."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'train' is not implemented yet (tracked in issue 6).")
