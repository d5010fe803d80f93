"""One writer per run folder: ``run.lock``, held with an exclusive ``flock`` while a run trains.

The kernel releases the lock when its process ends in any way (even SIGKILL), so a lock left by a
dead process is taken over by the next run, with a note naming that process. The file records the
holder's pid and host, which the refusal message names.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from types import TracebackType

from dskd.core.errors import DSKDError
from dskd.core.outputs import LOCK_NAME

log = logging.getLogger(__name__)


class RunLocked(DSKDError):
    """Another process is training in the same run folder."""


class RunLock:
    """Context manager holding ``folder/run.lock`` exclusively (:class:`RunLocked` when it is taken)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                log.warning(
                    "note: %s cannot be locked (%s); concurrent runs are not prevented.", self.path, e
                )
                return self
            holder = self._holder()
            raise RunLocked(
                f"The run folder {self.path.parent} is in use by process {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} ({self.path}); wait for that run to end, stop it, or give this "
                "run another folder (name, seed or runs_dir)."
            ) from e
        previous = self._holder()
        if previous.get("pid") and previous.get("pid") != os.getpid():
            log.warning("note: took over %s from process %s (no longer running).", self.path, previous["pid"])
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # an ended run leaves no holder behind
            os.close(self._fd)  # releases the flock
            self._fd = None
