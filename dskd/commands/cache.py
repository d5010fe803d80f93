"""`dskd cache`: precompute the teacher's top-k logits and hidden states for cached training."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Precompute the teacher's top-k logits and hidden states for cached training."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'cache' is not implemented yet (tracked in issue 9).")
