"""Stage progress off a terminal: plain lines, no carriage returns; tqdm's bar on a terminal."""

from __future__ import annotations

import io

from dskd.core import progress
from dskd.core.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_bar_is_plain_lines_ending_with_its_last_count(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # a line at every redraw
    for _ in progress_bar(range(5), desc="gather", unit="tok", file=out, leave=False):
        pass
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert all(line.startswith("gather:") for line in lines)
    assert "5/5" in lines[-1]  # the final state stays, even of a bar that a terminal would clear


def test_off_a_terminal_lines_are_at_least_the_interval_apart():
    out = io.StringIO()
    for _ in progress_bar(range(1000), desc="k-means", file=out):
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) <= 2 and "1000/1000" in lines[-1]  # the first draw and the last, not 1000 redraws


def test_on_a_terminal_it_is_tqdms_bar():
    out = Terminal()
    for _ in progress_bar(range(3), desc="eval", file=out):
        pass
    assert "\r" in out.getvalue()
