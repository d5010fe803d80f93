"""`dskd export`: export a checkpoint as a plain Hugging Face model folder."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Export a checkpoint as a plain Hugging Face model folder."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'export' is not implemented yet (tracked in issue 6).")
