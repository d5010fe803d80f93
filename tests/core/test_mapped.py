"""Memory-mapped artifacts changed under a running process: `cp` over one is one line at the next read
(not SIGBUS), `mv` over one is harmless, and a SIGBUS that slips between two checks prints a traceback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dskd.core.errors import DSKDError
from dskd.core.io import MappedFiles
from dskd.senses.dictionary import SENSES_FILE, SenseDictionary

ROOT = Path(__file__).resolve().parents[2]
META = {"teacher": "tiny", "tokenizer_fingerprint": "abc", "keying": "predicted", "table_size": 5000}


def _dictionary(seed: int, keys: int) -> SenseDictionary:
    """``keys`` keys of 4 senses of 64 floats (2,500 keys: 2.6 MB, pages far past a small file's end)."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(4 * keys, 64, generator=gen)
    return SenseDictionary(rows, torch.full((keys,), 4), torch.arange(0, 2 * keys, 2), 4, dict(META))


def test_a_file_written_over_in_place_is_refused_a_renamed_or_deleted_one_passes(tmp_path):
    files = [tmp_path / n for n in ("a.bin", "b.bin", "c.bin")]
    for f in files:
        f.write_bytes(b"x" * 4096)
    mapped = MappedFiles.of(files)
    mapped.check()
    (tmp_path / "new").write_bytes(b"y" * 100)
    os.replace(tmp_path / "new", files[0])  # mv: the mapped inode is intact
    files[1].unlink()
    mapped.check()
    shutil.copyfile(tmp_path / "a.bin", files[2])  # cp: the same inode truncated and rewritten
    with pytest.raises(DSKDError) as info:
        mapped.check()
    assert str(info.value).startswith(
        f"{files[2]} was changed in place while this process reads it memory-mapped "
        "(4096 bytes then, 100 now)"
    )
    assert "never `cp` onto it" in str(info.value)


def test_a_sense_dictionary_copied_over_on_the_cpu_is_refused_at_the_next_lookup(tmp_path):
    _dictionary(0, 2500).save(tmp_path / "old")
    _dictionary(1, 3).save(tmp_path / "other")
    loaded = SenseDictionary.load(tmp_path / "old", device="cpu")  # rows read from the file's pages
    keys = torch.tensor([2, 4000, 4998])  # the last rows: SIGBUS after the cp below, before the check
    before = loaded.lookup(keys)[0].clone()
    shutil.copyfile(tmp_path / "other" / SENSES_FILE, tmp_path / "old" / SENSES_FILE)  # cp; was SIGBUS
    with pytest.raises(DSKDError, match=rf"^{tmp_path / 'old' / SENSES_FILE} was changed in place"):
        loaded.lookup(keys)
    _dictionary(0, 2500).save(tmp_path / "new")
    moved = SenseDictionary.load(tmp_path / "new", device="cpu")
    os.replace(tmp_path / "other" / SENSES_FILE, tmp_path / "new" / SENSES_FILE)  # mv over it: harmless
    assert torch.equal(moved.lookup(keys)[0], before)
    restricted = SenseDictionary.load(tmp_path / "new", device="cpu", keys=torch.tensor([2]))
    assert restricted.mapped is None  # a copy of the rows it keeps: nothing to check


def test_a_sigbus_between_two_checks_prints_python_s_traceback_and_dies_of_it(tmp_path):
    """What the checks cannot close: a read of a page truncated away a moment before. dskd's CLI turns
    on faulthandler, so the process prints the Python stack instead of dying silently."""
    script = (
        "import os, numpy as np\n"
        "from dskd.cli import report_crashes\n"
        "report_crashes()\n"
        "path = 'hidden.bin'\n"
        "np.ones(1 << 16, dtype=np.float32).tofile(path)\n"
        "view = np.memmap(path, dtype=np.float32, mode='r')\n"
        "os.truncate(path, 0)  # what `cp` does first\n"
        "print(float(view[-1]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONFAULTHANDLER", None)
    cmd = [sys.executable, "-c", script]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == -signal.SIGBUS
    assert out.stderr.startswith("Fatal Python error: Bus error\n")
    assert 'File "<string>", line 8 in <module>' in out.stderr and out.stdout == ""
