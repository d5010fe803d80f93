"""Sampled teacher cache: round trip against the teacher's own seeded draws, reproducible builds,
the layout's bytes, and refusals (other samples, seed or tau; a divergence samples cannot serve)."""

from __future__ import annotations

import pytest
import torch

from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.core.io import read_json
from dskd.models.loading import load_causal_lm, load_tokenizer
from dskd.models.shared import StageProcess
from dskd.teacher_cache.build import build, open_cache, run_batches, teacher_outputs
from dskd.teacher_cache.store import pack_ids, sequence_keys, unpack_ids
from tests.sections import spec_of

SAMPLED = {"cache.kd_format": "sampled", "cache.samples": 16, "loss.kd.tau": 2.0}


def _build(cfg, **kw):
    return build(cfg, process=StageProcess(progress=False), **kw).stats


def test_ids_pack_into_three_bytes():
    ids = torch.tensor([[0, 1, 255, 256, 65_535, 128_255, 2**24 - 1]])
    packed = pack_ids(ids)
    assert packed.shape == (1, 7, 3) and packed.dtype.name == "uint8"
    assert torch.equal(unpack_ids(packed), ids)


def test_round_trip_matches_the_teachers_seeded_draws(make_cfg):
    cfg = make_cfg(**SAMPLED)
    stats = _build(cfg, hidden_dtype="none")
    meta = read_json(f"{cfg.cache.dir}/meta.json")
    assert meta["taus"] == [2.0] and meta["targets"] == "sampled" and meta["samples"] == 16
    tok = load_tokenizer(cfg.teacher.model)
    teacher = load_causal_lm(cfg.teacher.model, dtype="float32")
    cache = open_cache(spec_of(cfg), tok)
    for batch in run_batches(spec_of(cfg), tok, [cfg.seed]):
        keys = sequence_keys(batch["input_ids"], batch["attention_mask"], cfg.data.seq_len)
        want, _ = teacher_outputs(teacher, batch, spec_of(cfg), keys)
        got = cache.lookup(batch["input_ids"], batch["attention_mask"]).targets
        assert torch.equal(got.ids, want.ids) and torch.equal(got.counts, want.counts)
        assert torch.equal(got.top1, want.top1)
        torch.testing.assert_close(got.entropy, want.entropy)
        assert (got.counts.sum(-1) == 16).all()
    # the stored layout: 16 x (3 B id + 1 B count) + 4 B entropy + 3 B top-1 per position
    per_pos = stats["bytes_per_position"]
    assert per_pos["sample_ids"] == 48 and per_pos["sample_counts"] == 16
    assert per_pos["entropy"] == 4 and per_pos["top1"] == 3


def test_a_rebuild_draws_the_same_samples_and_another_seed_others(make_cfg):
    cfg = make_cfg(**SAMPLED)
    _build(cfg, hidden_dtype="none")
    first = read_json(f"{cfg.cache.dir}/meta.json")["files"]
    _build(cfg, hidden_dtype="none", overwrite=True)
    assert read_json(f"{cfg.cache.dir}/meta.json")["files"] == first
    _build(make_cfg(**SAMPLED, **{"cache.seed": 1}), hidden_dtype="none", overwrite=True)
    other = read_json(f"{cfg.cache.dir}/meta.json")["files"]
    assert other["sample_ids.bin"]["sha256"] != first["sample_ids.bin"]["sha256"]
    assert other["entropy.bin"] == first["entropy.bin"]  # exact, not sampled


@pytest.mark.parametrize(
    ("field", "over"),
    [
        ("samples", {"cache.samples": 32}),
        ("seed", {"cache.seed": 3}),
        ("tau", {"loss.kd.tau": 1.0}),  # samples at one tau do not serve another
        ("targets", {"cache.kd_format": "topk"}),
    ],
)
def test_a_sampled_cache_refuses_other_settings(make_cfg, field, over):
    _build(make_cfg(**SAMPLED), hidden_dtype="none")
    cfg = make_cfg(**{**SAMPLED, **over})
    with pytest.raises(ArtifactMismatchError, match=f"field '{field}'"):
        open_cache(spec_of(cfg), load_tokenizer(cfg.teacher.model))


def test_a_divergence_samples_cannot_estimate_is_not_built(make_cfg):
    cfg = make_cfg(**SAMPLED, **{"loss.kd.divergence": "reverse_kl"})
    with pytest.raises(DSKDError, match="estimates forward-KL KD only.*kd_format=topk"):
        _build(cfg, hidden_dtype="none")


def test_bytes_per_position_of_the_layouts_at_paper_scale():
    from dskd.teacher_cache.store import bytes_per_position

    sampled = {"targets": "sampled", "samples": 64, "taus": [2.0], "hidden_dtype": "float16"}
    sampled |= {"hidden_positions": "sense", "hidden_size": 576}
    got = bytes_per_position(sampled, hidden_size=4096, hidden_fraction=0.25)
    # 64 x (3 B id + 1 B count) + 4 B entropy + 3 B top-1; 25% of positions x 4,096 x 2 B + 4 B index
    assert got == {
        "sample_ids": 192,
        "sample_counts": 64,
        "entropy": 4,
        "top1": 3,
        "hidden": 2048,
        "hidden_index": 4,
    }
    topk = {"targets": "topk", "top_k": 1024, "taus": [1.0, 2.0], "hidden_dtype": "none", "hidden_size": 576}
    # 1,024 x (2 B log-prob + 4 B id) + 4 B lse + 2 x 4 B lse_tau + 2 x 4 B tail
    assert sum(bytes_per_position(topk).values()) == 6144 + 4 + 8 + 8
