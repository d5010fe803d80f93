"""`dskd assets`: fetch, list and locate the offline assets (teacher, WordNet, corpora, eval data)."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Fetch, list and locate the offline assets (teacher, WordNet, corpora, eval data)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'assets' is not implemented yet (tracked in issue 2).")
