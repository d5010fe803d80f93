"""Atomic writes on a full disk (a real 1 MiB tmpfs), metadata damage and file integrity checks."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from dskd.core.errors import DSKDError
from dskd.core.io import (
    DiskFullError,
    atomic_dir,
    atomic_path,
    file_digests,
    read_artifact_json,
    verify_files,
    verify_level,
    write_json_atomic,
)


def test_a_full_disk_is_one_line_and_leaves_the_old_artifact(small_disk):
    out = small_disk / "artifact"
    with atomic_dir(out) as tmp:
        (tmp / "data.bin").write_bytes(b"old")
    with pytest.raises(DiskFullError) as err:
        with atomic_dir(out) as tmp:
            (tmp / "data.bin").write_bytes(os.urandom(2 << 20))
    message = str(err.value)
    assert "\n" not in message and f"writing {out}" in message and "MiB free" in message
    assert (out / "data.bin").read_bytes() == b"old"
    assert sorted(p.name for p in small_disk.iterdir()) == ["artifact"], "no temporary folder left behind"


def _safetensors_save(t: torch.Tensor, path) -> None:
    from safetensors.torch import save_file

    save_file({"t": t}, str(path))


@pytest.mark.parametrize(
    "save",
    [torch.save, _safetensors_save],  # torch: a RuntimeError with no errno; safetensors: its own error type
    ids=["torch", "safetensors"],
)
def test_library_errors_on_a_full_disk_are_recognised(small_disk, save):
    path = small_disk / "tensor.bin"
    with pytest.raises(DiskFullError, match="No space left on the device while writing"):
        with atomic_path(path) as tmp:
            save(torch.zeros(1 << 19), tmp)
    assert list(small_disk.iterdir()) == []


def test_other_errors_pass_through_and_clean_up(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "x").write_text("x")
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, error", [("{not json", "JSONDecodeError"), ("[1, 2]", "holds a JSON list")])
def test_damaged_metadata_is_one_line(tmp_path, text, error):
    (tmp_path / "meta.json").write_text(text)
    with pytest.raises(DSKDError, match=error) as err:
        read_artifact_json(tmp_path / "meta.json", "Rebuild it.")
    assert "Rebuild it." in str(err.value) and "\n" not in str(err.value)


def test_verify_files_sizes_always_sha256_on_request(tmp_path, monkeypatch):
    (tmp_path / "a.bin").write_bytes(b"0123456789")
    recorded = file_digests(tmp_path, ["a.bin"])
    assert recorded["a.bin"]["size"] == 10
    verify_files(tmp_path, recorded, "Rebuild.")
    (tmp_path / "a.bin").write_bytes(b"0123456780")  # same size, other bytes
    verify_files(tmp_path, recorded, "Rebuild.")  # the fast check does not read the data
    monkeypatch.setenv("DSKD_VERIFY", "full")
    with pytest.raises(DSKDError, match="does not match the sha256"):
        verify_files(tmp_path, recorded, "Rebuild.")
    (tmp_path / "a.bin").write_bytes(b"01234")
    with pytest.raises(DSKDError, match="has 5 bytes, its metadata records 10"):
        verify_files(tmp_path, recorded, "Rebuild.", full=False)
    (tmp_path / "a.bin").unlink()
    with pytest.raises(DSKDError, match="a.bin is missing"):
        verify_files(tmp_path, recorded, "Rebuild.")


def test_verify_level_from_the_environment(monkeypatch):
    monkeypatch.delenv("DSKD_VERIFY", raising=False)
    assert verify_level() == "fast"
    monkeypatch.setenv("DSKD_VERIFY", "thorough")
    with pytest.raises(DSKDError, match="DSKD_VERIFY='thorough' is not one of fast, full"):
        verify_level()


def test_digests_are_sha256_of_the_bytes(tmp_path):
    import hashlib

    (tmp_path / "b.json").write_text(json.dumps({"x": 1}))
    want = hashlib.sha256((tmp_path / "b.json").read_bytes()).hexdigest()
    assert file_digests(tmp_path, ["b.json"])["b.json"]["sha256"] == want


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_and_folders_get_the_modes_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {})  # before: 0600 whatever the umask (mkstemp's mode)
        with atomic_dir(tmp_path / "art") as tmp:
            write_json_atomic(tmp / "meta.json", {})
            save_file({"x": torch.zeros(2)}, tmp / "model.safetensors")  # safetensors 0.8 writes 0600
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "art" / "meta.json") == 0o666 & ~umask
    assert _mode(tmp_path / "art" / "model.safetensors") == 0o666 & ~umask
    assert _mode(tmp_path / "art") == 0o777 & ~umask


def _mode(path):
    return path.stat().st_mode & 0o777
