"""Structural damage to a teacher cache that keeps every file's size (so the default
``DSKD_VERIFY=fast`` size check passes) is refused at lookup, in one line naming the file, what is
wrong and the rebuild command; ``DSKD_VERIFY=full`` refuses it at open. An intact cache passes."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dskd.core.errors import DSKDError
from dskd.core.io import read_json
from dskd.models.loading import load_tokenizer
from dskd.models.shared import StageProcess
from dskd.teacher_cache.build import build, open_cache, run_batches
from dskd.teacher_cache.store import CachedTeacher, structure_problem
from dskd.training.run import train
from tests.sections import spec_of

from .conftest import VOCAB

SAMPLED = {"cache.kd_format": "sampled", "cache.samples": 16, "loss.kd.tau": 2.0}
REBUILD = "Delete it and rebuild it with `dskd cache build CONFIG`."


def _built(cfg, hidden_dtype: str = "none"):
    build(cfg, process=StageProcess(progress=False), hidden_dtype=hidden_dtype)
    return load_tokenizer(cfg.teacher.model)


def _overwrite(cfg, name: str, data: np.ndarray) -> None:
    """Replace ``<name>.bin`` with ``data``'s bytes, keeping its size."""
    path = Path(cfg.cache.dir) / f"{name}.bin"
    size = path.stat().st_size
    path.write_bytes(np.resize(data, size).astype(np.uint8).tobytes())


def _lookup_all(cfg, tok) -> None:
    cache = open_cache(spec_of(cfg), tok)
    for batch in run_batches(spec_of(cfg), tok, [cfg.seed]):
        cache.lookup(batch["input_ids"], batch["attention_mask"])


def _refused(cfg, tok, problem: str) -> str:
    with pytest.raises(DSKDError, match=problem) as err:
        _lookup_all(cfg, tok)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"The teacher cache at {cfg.cache.dir} is damaged")
    assert "of this batch" in message and message.endswith(REBUILD)
    return message


def test_intact_caches_pass_every_check(make_cfg, monkeypatch):
    monkeypatch.setenv("DSKD_VERIFY", "full")  # the per-batch checks and the scan at open
    for over in (SAMPLED, {}):
        cfg = make_cfg(**over)
        _lookup_all(cfg, _built(cfg, hidden_dtype="float16"))


def test_zeroed_sample_counts_are_refused_at_lookup(make_cfg):
    cfg = make_cfg(**SAMPLED)
    tok = _built(cfg)
    _overwrite(cfg, "sample_counts", np.zeros(1))  # trained to a negative KL before the check
    _refused(cfg, tok, r"sample_counts\.bin sample counts sum to 0 at \d+ positions, not cache\.samples=16")


@pytest.mark.parametrize("name", ["sample_ids", "top1"])
def test_random_token_ids_are_refused_at_lookup(make_cfg, name):
    cfg = make_cfg(**SAMPLED)
    tok = _built(cfg)
    _overwrite(cfg, name, np.random.default_rng(0).integers(0, 256, 4096))  # an index error before
    _refused(cfg, tok, rf"{name}\.bin \d+ values lie outside the vocabulary 0\.\.{VOCAB - 1}, e\.g\. \d+")


def test_topk_indices_outside_the_vocabulary_are_refused_at_lookup(make_cfg):
    cfg = make_cfg()
    tok = _built(cfg)
    _overwrite(cfg, "topk_indices", np.full(1, 255))  # int32 -1 everywhere
    _refused(cfg, tok, r"topk_indices\.bin \d+ values lie outside the vocabulary 0\.\.63, e\.g\. -1")


def test_the_full_check_refuses_zeroed_counts_at_open(make_cfg, monkeypatch):
    cfg = make_cfg(**SAMPLED)
    tok = _built(cfg)
    counts = Path(cfg.cache.dir) / "sample_counts.bin"
    counts.write_bytes(bytes(counts.stat().st_size))
    monkeypatch.setenv("DSKD_VERIFY", "full")
    with pytest.raises(DSKDError, match="sample_counts.bin does not match the sha256"):
        open_cache(spec_of(cfg), tok)
    meta = read_json(f"{cfg.cache.dir}/meta.json")  # the scan that follows the sha256 check
    with pytest.raises(
        DSKDError, match=r"sample_counts\.bin sample counts sum to 0 at \d+ positions.* rows 0\.\."
    ):
        CachedTeacher(cfg.cache.dir, meta, 2.0).scan()


def test_a_cached_run_on_zeroed_sample_counts_stops_at_its_first_batch(make_cfg):
    cfg = make_cfg(**SAMPLED)
    _built(cfg)
    _overwrite(cfg, "sample_counts", np.zeros(1))
    cached = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, mode="cached"))
    with pytest.raises(DSKDError, match=r"sample_counts\.bin sample counts sum to 0 .*dskd cache build"):
        train(cached, export=False)  # before: exit 0 with train/kd < 0


def test_hidden_index_past_the_stored_rows_is_a_problem_and_minus_one_is_not():
    meta = {"vocab_size": VOCAB, "hidden_rows": 5}
    assert structure_problem("hidden_index", np.array([[-1, 0, 4]], dtype=np.int32), meta) is None
    problem = structure_problem("hidden_index", np.array([[-1, 5, -2]], dtype=np.int32), meta)
    assert problem == "2 values lie outside the stored hidden rows -1..4, e.g. 5"


def test_a_file_copied_over_an_open_cache_is_one_line_at_the_next_lookup_and_mv_is_harmless(make_cfg):
    """`cp` over hidden.bin of a running cached training used to kill it with SIGBUS (pages past the
    new end) or feed it the new bytes; `mv` leaves the open files intact."""
    cfg = make_cfg()
    tok = _built(cfg, hidden_dtype="float32")
    batch = next(iter(run_batches(spec_of(cfg), tok, [cfg.seed])))
    running = open_cache(spec_of(cfg), tok)
    want = running.lookup(batch["input_ids"], batch["attention_mask"]).hidden.clone()
    hidden = Path(cfg.cache.dir) / "hidden.bin"
    zeros = hidden.with_name("zeros")
    zeros.write_bytes(bytes(hidden.stat().st_size))
    os.replace(zeros, hidden)  # mv: the running lookups still read the old file
    assert torch.equal(running.lookup(batch["input_ids"], batch["attention_mask"]).hidden, want)
    later = open_cache(spec_of(cfg), tok)  # maps the zeros
    assert not later.lookup(batch["input_ids"], batch["attention_mask"]).hidden.any()
    shutil.copyfile(Path(cfg.cache.dir) / "keys.bin", hidden)  # cp: that file truncated and rewritten
    with pytest.raises(DSKDError) as info:
        later.lookup(batch["input_ids"], batch["attention_mask"])
    assert str(info.value).startswith(f"{hidden} was changed in place while this process reads it memory")
    assert torch.equal(running.lookup(batch["input_ids"], batch["attention_mask"]).hidden, want)
