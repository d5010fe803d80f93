"""Progress of the stages: tqdm's bar on a terminal, plain lines elsewhere (a SLURM ``.out`` file,
``make reproduce > log``), where a bar's carriage returns would pile up into one unreadable line.

Every stage's loop uses :func:`progress_bar` as it would ``tqdm``; off a terminal it writes one line every
:data:`LINE_INTERVAL_S` seconds and a last one at the end (as the ``[train]`` lines of a training do).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 30.0
"""Seconds between two progress lines off a terminal."""


class PlainLines:
    """A text stream for tqdm that turns each redraw (``\\r`` + status) into one line of ``stream``, and
    drops the blank redraws that clear a finished bar."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, **kw: Any) -> tqdm:
    """``tqdm(iterable, **kw)`` on a terminal (stderr, where tqdm writes); off one, plain lines."""
    stream = kw.pop("file", None) or sys.stderr
    if stream.isatty():
        return tqdm(iterable, file=stream, **kw)
    kw.update(mininterval=max(kw.get("mininterval", 0.0), LINE_INTERVAL_S), ascii=True, ncols=100, leave=True)
    return tqdm(iterable, file=PlainLines(stream), dynamic_ncols=False, **kw)
