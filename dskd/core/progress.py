"""Progress of the stages: tqdm's bar on a terminal, plain lines elsewhere (a SLURM ``.out`` file,
``make reproduce > log``), where a bar's carriage returns would pile up into one unreadable line.

Every stage's loop uses :func:`progress_bar` as it would ``tqdm``; off a terminal it writes one line every
:data:`LINE_INTERVAL_S` seconds and a last one at the end (as the ``[train]`` lines of a training do).
The bars of a library that takes no stream (lm-eval's) become lines under :func:`plain_stderr`.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 30.0
"""Seconds between two progress lines off a terminal."""


class PlainLines:
    """A text stream for tqdm that turns each redraw (``\\r`` + status) into one line of ``stream``, and
    drops the blank redraws that clear a finished bar and a redraw of the count just written (tqdm's
    close redraws the last count with the overall rate)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._count = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        count = line.split(" [", 1)[0]  # description, percentage, bar and n/total, without the timing
        if line and count != self._count:
            self.stream.write(line + "\n")
            self._count = count
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


class TerminalLines:
    """A text stream that writes what a terminal would keep: a ``\\r`` redraw replaces the unfinished line
    (it is written as a line only when :data:`LINE_INTERVAL_S` passed since the last one), ``\\n`` ends it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._line = ""
        self._last = time.monotonic()

    def write(self, text: str) -> int:
        for part in re.split(r"(\r|\n)", text):
            if part == "\n" or (part == "\r" and self._line.strip() and self._due()):
                self.stream.write(self._line.rstrip() + "\n")
                self._last = time.monotonic()
            if part in ("\r", "\n"):
                self._line = ""
            else:
                self._line += part
        return len(text)

    def _due(self) -> bool:
        return time.monotonic() - self._last >= LINE_INTERVAL_S

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def plain_stderr() -> Iterator[None]:
    """Off a terminal, ``sys.stderr`` as :class:`TerminalLines` for the body: the progress bars of a library
    that takes no stream (lm-eval's, datasets') leave lines instead of carriage returns. On one, nothing."""
    if sys.stderr.isatty():
        yield
        return
    with contextlib.redirect_stderr(TerminalLines(sys.stderr)):  # type: ignore[type-var]
        yield
