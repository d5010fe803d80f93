"""run.lock: one writer per run folder, a dead holder's lock taken over (dskd.training.runlock)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dskd.training.runlock import LOCK_NAME, RunLock, RunLocked

HOLD = """
import sys, time
from dskd.training.runlock import RunLock
RunLock(sys.argv[1]).__enter__()
print("held", flush=True)
time.sleep(120)
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s run lock until it is killed."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_a_dead_holders_lock_taken_over(tmp_path, caplog):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(RunLocked, match=rf"in use by process {holder.pid} on {socket.gethostname()}"):
            RunLock(tmp_path).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with caplog.at_level(logging.INFO, logger="dskd.training.runlock"), RunLock(tmp_path):
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_NAME).read_text()
    assert f"from process {holder.pid} (no longer running)" in caplog.text
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: no holder recorded
    with RunLock(tmp_path):  # and free again
        pass
