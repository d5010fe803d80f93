"""Stage progress off a terminal: plain lines, no carriage returns; tqdm's bar on a terminal."""

from __future__ import annotations

import io
import re

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


def test_off_a_terminal_the_last_count_is_one_line_though_tqdm_redraws_it_at_close(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    for _ in progress_bar(range(3), desc="teacher cache", file=out):
        pass
    counts = [re.search(r"\d+/3", line).group(0) for line in out.getvalue().splitlines()]
    assert counts == ["0/3", "1/3", "2/3", "3/3"]


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


def test_terminal_lines_keep_what_a_terminal_would_show_of_a_third_party_bar(monkeypatch):
    out = io.StringIO()
    stream = progress.TerminalLines(out)
    stream.write("note before\n")
    for i in range(4):  # tqdm's redraws: a carriage return, then the new state
        stream.write(f"\rrequests: {25 * (i + 1)}%|")
    stream.write("\n")
    stream.write("\rcleared: 50%|\r" + " " * 20 + "\r")  # a bar that clears itself (leave=False)
    stream.write("warned\n")
    assert out.getvalue() == "note before\nrequests: 100%|\nwarned\n"


def test_terminal_lines_write_a_redraw_once_the_interval_passed(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    stream = progress.TerminalLines(out)
    stream.write("\rgather: 1/3\rgather: 2/3\rgather: 3/3\n")
    assert out.getvalue() == "gather: 1/3\ngather: 2/3\ngather: 3/3\n"


def test_a_library_bar_under_plain_stderr_leaves_lines_without_carriage_returns(monkeypatch):
    from tqdm import tqdm

    err = io.StringIO()  # not a terminal, as a batch job's stderr
    monkeypatch.setattr("sys.stderr", err)
    with progress.plain_stderr():
        for _ in tqdm(range(50), desc="Running loglikelihood requests", mininterval=0):  # no file=
            pass
    text = err.getvalue()
    assert "\r" not in text and text.count("\n") == 1 and "50/50" in text


def test_on_a_terminal_plain_stderr_leaves_stderr_alone(monkeypatch):
    err = Terminal()
    monkeypatch.setattr("sys.stderr", err)
    with progress.plain_stderr():
        import sys

        assert sys.stderr is err
