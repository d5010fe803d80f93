"""Teacher cache: round trip against the online teacher, refused mismatches, missing sequences."""

from __future__ import annotations

import pytest
import torch

from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.core.io import read_json
from dskd.models.loading import load_causal_lm, load_tokenizer
from dskd.models.shared import StageProcess
from dskd.teacher_cache.build import build, open_cache, run_batches, teacher_outputs
from dskd.teacher_cache.store import FORMAT_VERSION, sequence_keys
from tests.sections import spec_of


def _build(cfg, **kw):
    return build(cfg, process=StageProcess(progress=False), **kw).stats


def test_round_trip_matches_the_online_teacher(make_cfg):
    cfg = make_cfg(**{"loss.kd.tau": 2.0})
    stats = _build(cfg, hidden_dtype="float32")
    tok = load_tokenizer(cfg.teacher.model)
    teacher = load_causal_lm(cfg.teacher.model, dtype="float32")
    cache = open_cache(spec_of(cfg), tok)
    batches = list(run_batches(spec_of(cfg), tok, [cfg.seed]))
    assert len(batches) == 4 + 2  # max_steps training batches + limit_val_batches validation batches
    assert (
        stats["rows"] == len(cache) == sum(len(b["input_ids"]) for b in batches) - stats["duplicates_skipped"]
    )
    meta = read_json(f"{cfg.cache.dir}/meta.json")
    assert meta["taus"] == [1.0, 2.0] and meta["provenance"]["stage"] == "cache"
    for batch in batches:
        keys = sequence_keys(batch["input_ids"], batch["attention_mask"], cfg.data.seq_len)
        (want, at_tau), hidden = teacher_outputs(teacher, batch, spec_of(cfg), keys)  # taus 1 and 2
        got = cache.lookup(batch["input_ids"], batch["attention_mask"])
        assert torch.equal(got.hidden, hidden)  # float32 hidden states: exact
        assert got.hidden_stored is None  # hidden states at all positions
        assert torch.equal(got.targets.indices, want.indices)
        torch.testing.assert_close(got.targets.log_probs, want.log_probs, atol=2e-3, rtol=1e-3)  # float16
        torch.testing.assert_close(got.targets.lse_tau, at_tau.lse_tau)
        torch.testing.assert_close(got.targets.tail_tau, at_tau.tail_tau)


def test_float16_hidden_states_within_half_precision(make_cfg):
    cfg = make_cfg()
    _build(cfg)  # default float16
    tok = load_tokenizer(cfg.teacher.model)
    teacher = load_causal_lm(cfg.teacher.model, dtype="float32")
    batch = next(run_batches(spec_of(cfg), tok, [cfg.seed]))
    got = open_cache(spec_of(cfg), tok).lookup(batch["input_ids"], batch["attention_mask"])
    keys = sequence_keys(batch["input_ids"], batch["attention_mask"], cfg.data.seq_len)
    torch.testing.assert_close(
        got.hidden, teacher_outputs(teacher, batch, spec_of(cfg), keys)[1], rtol=1e-3, atol=1e-3
    )


@pytest.mark.parametrize(
    ("field", "over"),
    [
        ("data_fingerprint", {"data.seq_len": 12}),
        ("data_fingerprint", {"data.shuffle_buffer": 0}),
        ("top_k", {"cache.top_k": 4}),
        ("targets", {"cache.kd_format": "sampled"}),
        ("teacher", {"teacher.revision": "other"}),
        ("tau", {"loss.kd.tau": 3.0}),
    ],
)
def test_mismatched_cache_is_refused_naming_the_field(make_cfg, field, over):
    _build(make_cfg())
    cfg = make_cfg(**over)
    with pytest.raises(ArtifactMismatchError, match=f"field '{field}'"):
        open_cache(spec_of(cfg), load_tokenizer(cfg.teacher.model))


def test_other_tokenizer_is_refused(make_cfg, tmp_path):
    from dskd.testing.fixtures import word_tokenizer

    cfg = make_cfg()
    _build(cfg)
    with pytest.raises(ArtifactMismatchError, match="field 'tokenizer_fingerprint'"):
        open_cache(spec_of(cfg), word_tokenizer(70))


def test_kd_only_cache_is_refused_for_dskd_and_missing_cache_explained(make_cfg):
    cfg = make_cfg()
    _build(cfg, hidden_dtype="none")
    tok = load_tokenizer(cfg.teacher.model)
    open_cache(spec_of(cfg), tok)  # fine for method=kd
    with pytest.raises(ArtifactMismatchError, match="field 'hidden_dtype'"):
        open_cache(spec_of(make_cfg(method="dskd")), tok)
    with pytest.raises(DSKDError, match="dskd cache build"):
        open_cache(spec_of(make_cfg(**{"cache.dir": cfg.cache.dir + "-absent"})), tok)


def test_seeds_share_one_cache_and_a_missing_sequence_is_a_clear_error(make_cfg):
    cfg = make_cfg()
    tok = load_tokenizer(cfg.teacher.model)
    _build(cfg, seeds=[0, 1])
    cache = open_cache(spec_of(cfg), tok)
    for seed in (0, 1):
        for batch in run_batches(spec_of(cfg), tok, [seed]):
            cache.lookup(batch["input_ids"], batch["attention_mask"])
    unseen = [b for b in run_batches(spec_of(cfg), tok, [5]) if not _all_cached(cache, b)]
    assert unseen, "seed 5 should shuffle into sequences the cache does not hold"
    with pytest.raises(ArtifactMismatchError, match=r"not in the teacher cache.*seeds \[0, 1\]"):
        cache.lookup(unseen[0]["input_ids"], unseen[0]["attention_mask"])


def _all_cached(cache, batch) -> bool:
    try:
        cache.lookup(batch["input_ids"], batch["attention_mask"])
    except ArtifactMismatchError:
        return False
    return True


def _poke(cfg, name: str, value: float, row: int = 0) -> None:
    """Write ``value`` into row ``row`` of the cache array ``name`` (in place, same size)."""
    import numpy as np

    meta = read_json(f"{cfg.cache.dir}/meta.json")
    spec = meta["arrays"][name]
    arr = np.memmap(f"{cfg.cache.dir}/{name}.bin", dtype=spec["dtype"], mode="r+", shape=tuple(spec["shape"]))
    arr[row] = value
    arr.flush()


def _first_batch(cfg, tok):
    return next(iter(run_batches(spec_of(cfg), tok, [cfg.seed])))


def test_damaged_rows_are_refused_at_lookup_and_by_a_full_check_at_open(make_cfg, monkeypatch):
    cfg = make_cfg()
    _build(cfg)
    tok = load_tokenizer(cfg.teacher.model)
    cache = open_cache(spec_of(cfg), tok)
    batch = _first_batch(cfg, tok)
    row = int(cache.rows(sequence_keys(batch["input_ids"], batch["attention_mask"], cfg.data.seq_len))[0])
    _poke(cfg, "tail_tau", float("-inf"), row)  # no teacher mass outside the top-k: a valid value
    open_cache(spec_of(cfg), tok).lookup(batch["input_ids"], batch["attention_mask"])
    _poke(cfg, "hidden", float("nan"), row)
    damaged = open_cache(spec_of(cfg), tok)  # the default fast check does not read the values
    with pytest.raises(DSKDError, match=rf"array 'hidden' has NaN or infinite values in rows .*{row}"):
        damaged.lookup(batch["input_ids"], batch["attention_mask"])
    monkeypatch.setenv("DSKD_VERIFY", "full")
    with pytest.raises(DSKDError, match="hidden.bin does not match the sha256 in its metadata"):
        open_cache(spec_of(cfg), tok)


def test_the_full_scan_names_the_damaged_rows(make_cfg, monkeypatch):
    from dskd.teacher_cache.store import CachedTeacher

    cfg = make_cfg()
    _build(cfg)
    _poke(cfg, "lse", float("inf"), 1)
    monkeypatch.setenv("DSKD_VERIFY", "full")
    meta = read_json(f"{cfg.cache.dir}/meta.json")
    with pytest.raises(DSKDError, match=r"array 'lse' has NaN or infinite values in rows 0\.\."):
        CachedTeacher(cfg.cache.dir, meta, 1.0).scan()


def test_truncated_file_and_damaged_metadata_are_one_line(make_cfg):
    import json
    from pathlib import Path

    cfg = make_cfg()
    _build(cfg)
    tok = load_tokenizer(cfg.teacher.model)
    lse = Path(cfg.cache.dir) / "lse.bin"
    lse.write_bytes(lse.read_bytes()[:-8])
    with pytest.raises(DSKDError, match=r"lse.bin has \d+ bytes, its metadata records \d+"):
        open_cache(spec_of(cfg), tok)
    meta_path = Path(cfg.cache.dir) / "meta.json"
    meta_path.write_text(meta_path.read_text()[:40])
    with pytest.raises(DSKDError, match="meta.json .JSONDecodeError.*dskd cache build") as err:
        open_cache(spec_of(cfg), tok)
    assert "\n" not in str(err.value)
    meta_path.write_text(json.dumps({"format_version": FORMAT_VERSION}))
    with pytest.raises(DSKDError, match="lacks teacher, tokenizer_fingerprint"):
        open_cache(spec_of(cfg), tok)


def test_a_foreign_cache_dir_is_refused(make_cfg):
    from pathlib import Path

    cfg = make_cfg()
    Path(cfg.cache.dir).mkdir(parents=True)
    (Path(cfg.cache.dir) / "notes.txt").write_text("mine")
    with pytest.raises(DSKDError, match="holds files not written by dskd"):
        _build(cfg)
    assert [p.name for p in Path(cfg.cache.dir).iterdir()] == ["notes.txt"]
