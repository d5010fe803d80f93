"""Crash-safe checkpoint saves, trusted loads and the fallback of resume (dskd.training.checkpoints).

The fault suite kills (SIGKILL) a process at many points of its checkpoint saves, with the run
folder on another filesystem than ``$TMPDIR``, and checks what is left after each kill.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch

from dskd.core.io import DiskFullError
from dskd.training.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    pick_checkpoint,
    previous_path,
    read_checkpoint,
    remove_staging,
    save_atomic,
)


def _ckpt(step: int, numel: int = 1000) -> dict:
    """A checkpoint whose every weight is ``step``: a torn file cannot pass for a whole one."""
    return {
        "dskd": {"config": ""},
        "global_step": step,
        "state_dict": {"w": torch.full((numel,), float(step))},
    }


def _check_whole(ckpt: dict) -> None:
    assert torch.equal(ckpt["state_dict"]["w"], torch.full_like(ckpt["state_dict"]["w"], ckpt["global_step"]))


class _Evil:
    """Unpickling this runs ``touch MARKER``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"dskd": {"config": ""}, "global_step": 1, "payload": _Evil(marker)}, path)
    return path


def test_save_keeps_the_previous_checkpoint_and_no_staging_file(tmp_path):
    last = tmp_path / "ckpts" / "last.ckpt"
    save_atomic(_ckpt(1), last)
    assert not previous_path(last).exists()
    save_atomic(_ckpt(2), last)
    save_atomic(_ckpt(3), last)
    assert previous_path(last) == tmp_path / "ckpts" / "last.prev.ckpt"
    assert read_checkpoint(last)["global_step"] == 3
    assert read_checkpoint(previous_path(last))["global_step"] == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.prev.ckpt"]


def test_crafted_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match=r"Refusing to load .*evil.ckpt.*GLOBAL .*system"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "not dskd"])
def test_damaged_or_foreign_files_are_reported_in_one_line(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    save_atomic(_ckpt(1), path)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)
    expected = (
        "not written by `dskd train`" if damage == "not dskd" else "is not a readable PyTorch checkpoint"
    )
    assert expected in str(info.value)


def test_pick_falls_back_to_the_next_usable_checkpoint_with_a_note(tmp_path, caplog):
    last, prev = tmp_path / "last.ckpt", tmp_path / "last.prev.ckpt"
    assert pick_checkpoint([last, prev]) is None
    save_atomic(_ckpt(4), prev)
    last.write_bytes(b"")  # what Lightning's save left after a kill, with $TMPDIR on another filesystem
    with caplog.at_level(logging.WARNING, logger="dskd.training.checkpoints"):
        path, ckpt = pick_checkpoint([last, prev])
    assert path == prev and ckpt["global_step"] == 4
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "last.ckpt" in notes[0] and "Resuming from" in notes[0]
    prev.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="No usable checkpoint is left"):
        pick_checkpoint([last, prev])


def test_remove_staging_deletes_only_checkpoint_staging_files(tmp_path):
    for name in (".last.ckpt.abc123.tmp", ".hpc_ckpt_2.ckpt.x.tmp", ".metrics.csv.y.tmp", "last.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_staging(tmp_path)
    assert sorted(p.name for p in removed) == [".hpc_ckpt_2.ckpt.x.tmp", ".last.ckpt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.csv.y.tmp", "last.ckpt"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs mounted for the test (skipped where mounting is not allowed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_full_disk_keeps_the_checkpoints_and_says_so(small_tmpfs):
    last = small_tmpfs / "last.ckpt"
    save_atomic(_ckpt(1, numel=100_000), last)  # 0.4 MB
    save_atomic(_ckpt(2, numel=100_000), last)
    with pytest.raises(DiskFullError, match=r"No space left on the device while writing .*last.ckpt"):
        save_atomic(_ckpt(3, numel=450_000), last)  # 1.8 MB: does not fit next to last.ckpt
    assert read_checkpoint(last)["global_step"] == 2
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["last.ckpt"]  # no staging file left


# ---------------------------------------------------------------------------- kill -9 during saves

NUMEL = 1_000_000  # 4 MB per checkpoint


def _save_all(last: Path, ckpts: list[dict], conn) -> None:
    """Child: save ``ckpts`` one after the other, announcing each save before it starts.

    The parent builds the checkpoints: a forked child must not start torch's thread pool.
    """
    for ckpt in ckpts:
        conn.send(ckpt["global_step"])
        save_atomic(ckpt, last)
    conn.send(None)


def kill_during_saves(folder: Path, delays: list[float]) -> dict[str, int]:
    """SIGKILL a saving process once per delay (seconds after its first save starts); check the folder
    after each kill: a whole checkpoint, the one the killed save replaced or the one it wrote.

    Returns counts: kills, progressed (a save completed before the kill) or unchanged, staging files
    left (removed as the next run does), last.ckpt missing (a kill between the two renames)."""
    ctx = multiprocessing.get_context("fork")
    last = folder / "last.ckpt"
    stats = {"kills": 0, "progressed": 0, "unchanged": 0, "staging_left": 0, "last_missing": 0}
    for delay in delays:
        path, ckpt = pick_checkpoint([last, previous_path(last)])  # where the next run continues
        step = ckpt["global_step"]
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_save_all, args=(last, [_ckpt(step + i, NUMEL) for i in range(1, 11)], child)
        )
        proc.start()
        child.close()
        assert parent.poll(30), "the saving process did not start"
        started = parent.recv()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        announced = [started]
        with contextlib.suppress(EOFError):  # saves begun before the kill
            while parent.poll():
                announced.append(parent.recv())
        assert None not in announced, "all saves ended before the kill: raise NUMEL"
        started = announced[-1]
        stats["kills"] += 1
        stats["last_missing"] += not last.exists()
        picked = pick_checkpoint([last, previous_path(last)])
        assert picked is not None, f"no checkpoint after a kill {delay * 1e3:.1f} ms into a save"
        path, ckpt = picked
        _check_whole(read_checkpoint(path))  # whole, not only its header
        assert ckpt["global_step"] in (started - 1, started), (delay, started, ckpt["global_step"])
        stats["progressed" if ckpt["global_step"] > step else "unchanged"] += 1
        stats["staging_left"] += len(remove_staging(folder))  # as the next run of the folder does
        assert not list(folder.glob(".*.tmp"))
    return stats


def test_kill_9_at_many_points_of_a_save_leaves_a_whole_checkpoint(monkeypatch):
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    folder = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="dskd-kill-"))
    tmpdir = Path(tempfile.mkdtemp())
    try:
        if folder.stat().st_dev == tmpdir.stat().st_dev:
            pytest.skip("/dev/shm and $TMPDIR are one filesystem here")
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        monkeypatch.setattr(tempfile, "tempdir", None)
        save_atomic(_ckpt(0, NUMEL), folder / "last.ckpt")
        t0 = time.perf_counter()
        save_atomic(_ckpt(0, NUMEL), folder / "last.ckpt")
        save_s = time.perf_counter() - t0
        delays = [save_s * 2 * i / 29 for i in range(30)]  # 30 kill points spread over two saves
        stats = kill_during_saves(folder, delays)
        assert stats["kills"] == stats["progressed"] + stats["unchanged"] == 30
        assert stats["progressed"] > 0 and stats["unchanged"] > 0  # kills before and after a rename
        assert stats["staging_left"] > 0  # kills landed while a staging file was being written
        print(f"save {save_s * 1e3:.1f} ms; {stats}")
        assert not list(tmpdir.iterdir())  # nothing was staged in $TMPDIR
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_lightning_resumes_through_the_trusted_reader(tmp_path):
    """`Trainer.fit(ckpt_path=...)` itself loads with weights_only: a crafted file is refused there too."""
    import lightning.pytorch as pl
    from lightning.pytorch.demos.boring_classes import BoringModel

    marker = tmp_path / "pwned"
    evil = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    trainer = pl.Trainer(
        plugins=[AtomicCheckpointIO()],
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
    )
    with pytest.raises(CheckpointError, match="Refusing to load"):
        trainer.fit(BoringModel(), ckpt_path=str(evil))
    assert not marker.exists()
