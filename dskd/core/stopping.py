"""Stopping an artifact stage cleanly on SIGTERM or Ctrl-C.

The artifact stages (lexicon, senses, continuations, teacher cache, export, asset fetch) run under
:func:`stop_cleanly`: there SIGTERM (``kill PID``, a scheduler, a container stopping) and Ctrl-C raise
:class:`Stopped` wherever the process is, so every atomic write of :mod:`dskd.core.io` on the way out
removes its temporary file or folder and replaces nothing; the CLI prints one line and exits 143 (130
for Ctrl-C). Without it SIGTERM ended a stage at once, with no message, and left its ``.NAME.*.tmp``.

A handler someone else installed stays in charge: training's (Lightning's SIGTERM handler stops after
the batch and saves a checkpoint). Outside the main thread :func:`stop_cleanly` does nothing (Python
runs signal handlers only there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, TracebackType

_DEFAULT = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
"""The handlers :func:`stop_cleanly` replaces: Python's own for each signal."""

_owner = 0
"""The process whose stage :func:`stop_cleanly` watches. Its forked children (DataLoader workers) inherit
the handler and ignore the signals it sees (torch's own SIGTERM handler in a worker still ends it): a
worker that raised :class:`Stopped` too printed a traceback of its own under the stage's one line."""

_sigchld: list = []
"""SIGCHLD's handler before a stop set it aside (restored when :func:`stop_cleanly` ends): DataLoader
workers ended by the same signal are expected then, and torch's handler would raise a RuntimeError over
the stop, possibly in the middle of removing a temporary folder."""

_held: list[int] | None = None
"""While an artifact is renamed into place (:func:`holding_signals`): the signals that came meanwhile."""


class Stopped(BaseException):
    """SIGTERM or Ctrl-C ended a stage. A BaseException, as KeyboardInterrupt, so that no
    ``except Exception`` on its way to the CLI takes it for an error of its own."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.what = ""
        """The stage it stopped (set by :func:`stop_cleanly`)."""
        self.unfinished: list[Path] = []
        """Destinations whose temporary file or folder was removed, innermost first."""
        self.completed: list[Path] = []
        """A destination renamed into place while the signal was held back."""

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as the shell reports a process the signal ended."""
        return 128 + self.signum

    def __str__(self) -> str:
        how = "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name
        what = self.what or "dskd"
        if self.completed:
            return f"{how} stopped {what} right after it wrote {self.completed[0]}; nothing is half-written."
        if self.unfinished:
            kept = f"{self.unfinished[-1]} is as it was and the unfinished temporary files were removed"
        else:
            kept = "no file was being written"
        return f"{how} stopped {what} before it finished; nothing was replaced ({kept}). Run it again."


def _stop(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _owner:  # a DataLoader worker, reached by a signal to the whole process group
        sys.excepthook = _quiet  # a batch it was handing over when the stage stopped: "connection reset"
        return  # the stage's process shuts it down as it unwinds; it ends on its own if that one is gone
    if _held is not None:
        _held.append(signum)
        return
    raise _stopping(signum)


def _quiet(*exc_info: object) -> None:
    """sys.excepthook of a worker told to stop."""


def _handover_quiet(hook: Callable) -> Callable:
    """``hook``, except in a forked worker for a lost handover: the stage's process went away while the
    worker's fd-sharing thread (multiprocessing's resource_sharer) was passing it a batch. A worker the
    signal did not reach printed that traceback under the stage's one line (or cut it in half)."""

    def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        lost = issubclass(kind, (ConnectionError, EOFError)) and os.getpid() != _owner
        if lost and any(f.filename.endswith("resource_sharer.py") for f in traceback.extract_tb(tb)):
            return
        hook(kind, error, tb)

    return excepthook


def _stopping(signum: int) -> Stopped:
    if not _sigchld:
        _sigchld.append(signal.signal(signal.SIGCHLD, signal.SIG_DFL))
    return Stopped(signum)


@contextlib.contextmanager
def stop_cleanly(what: str) -> Iterator[None]:
    """Run ``what`` (e.g. "the teacher cache build"; also a decorator) so that SIGTERM and Ctrl-C raise
    :class:`Stopped` naming it, where their handlers are still Python's own (module docstring)."""
    global _owner
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in _DEFAULT} if main else {}
    mine = [s for s, handler in previous.items() if handler is _DEFAULT[s]]
    _owner = os.getpid() if mine else _owner
    hook = sys.excepthook
    if mine:  # inherited by the DataLoader workers it forks
        sys.excepthook = _handover_quiet(hook)
    for s in mine:
        signal.signal(s, _stop)
    try:
        yield
    except Stopped as e:
        e.what = e.what or what
        raise
    finally:
        for s in mine:
            signal.signal(s, previous[s])
        if mine:
            sys.excepthook = hook
        if mine and _sigchld:
            signal.signal(signal.SIGCHLD, _sigchld.pop())


@contextlib.contextmanager
def holding_signals(path: Path) -> Iterator[None]:
    """Hold :class:`Stopped` back while ``path`` is renamed into place (never half swapped); a signal
    that came meanwhile is raised after it, naming ``path`` as written."""
    global _held
    outer, _held = _held, []
    try:
        yield
    finally:
        came, _held = _held, outer
    if came:
        stopped = _stopping(came[0])
        stopped.completed.append(path)
        raise stopped
