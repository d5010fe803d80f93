"""A real SIGTERM or Ctrl-C to a running `python -m dskd cache build`: one line, exit 143 / 130, the
previous cache untouched and no temporary folder left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dskd.models.shared import StageProcess
from dskd.teacher_cache.build import build

ROOT = Path(__file__).resolve().parents[2]


def _start_build(config: Path) -> subprocess.Popen:
    """`python -m dskd cache build` in a process group of its own (as a terminal's foreground job)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "dskd", "cache", "build", str(config), "--no-progress"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, **pipes)


def _wait_for_tmp(folder: Path, process: subprocess.Popen, timeout: float = 120.0) -> list[Path]:
    """The build's temporary folders (``.cache.*.tmp``) once one holds its first rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        tmps = list(folder.glob(".cache.*.tmp"))
        if tmps and any(f.stat().st_size for t in tmps for f in t.glob("*.bin")):
            return tmps
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"no temporary cache folder appeared; stderr: {process.communicate()[1][-2000:]}")


STOPS = [  # signal, exit status, its name in the line, DataLoader workers, sent to the process group
    (signal.SIGTERM, 143, "SIGTERM", 0, False),  # `kill PID`
    (signal.SIGINT, 130, "Ctrl-C", 0, False),
    (signal.SIGINT, 130, "Ctrl-C", 1, True),  # Ctrl-C in a terminal: the worker gets it too
    (signal.SIGTERM, 143, "SIGTERM", 1, True),  # as SLURM's scancel: every process of the job
    (signal.SIGTERM, 143, "SIGTERM", 1, False),
]


@pytest.mark.parametrize(("signum", "status", "how", "workers", "group"), STOPS)
def test_a_signal_during_cache_build_replaces_nothing_removes_its_tmp_and_says_so(
    make_cfg, tmp_path, signum, status, how, workers, group
):
    build(make_cfg(), process=StageProcess(progress=False))  # the previous cache, 4 steps
    cache = tmp_path / "cache"
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    config = tmp_path / "long.yaml"
    long = make_cfg(**{"trainer.max_steps": 100_000, "data.num_workers": workers})
    config.write_text(long.to_yaml(), encoding="utf-8")
    process = _start_build(config)
    assert _wait_for_tmp(tmp_path, process)  # rows of the new cache are being written
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == status, err[-2000:]
    assert err.splitlines()[-1] == (
        f"dskd: error: {how} stopped the teacher cache build before it finished; nothing was replaced "
        f"({cache} is as it was and the unfinished temporary files were removed). Run it again."
    )
    assert "Traceback" not in err and out == ""  # nor one of a worker losing a batch's handover
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no .cache.*.tmp
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before  # the previous cache, byte for byte
