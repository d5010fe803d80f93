"""Building a sense dictionary end to end on the real SmolLM2 teacher (a few texts)."""

import numpy as np
import pytest
import torch

from dskd.config.schema import ExperimentConfig
from dskd.core.errors import DSKDError
from dskd.corpora.config import SourceConfig
from dskd.senses.build import assemble, cluster, overall_sample, sense_mse_statistics
from dskd.senses.dictionary import SenseDictionary
from dskd.senses.gather import GatherSettings, gather, gather_from_config
from dskd.senses.reservoir import KeyedReservoir

TEXTS = [
    "The bank of the river was covered in reeds.",
    "She deposited the cheque at the bank on Monday.",
    "A bright light shone over the quiet water.",
    "The light box was not heavy at all.",
] * 3


@pytest.fixture(scope="module")
def teacher(smollm2_dir):
    from dskd.models.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(str(smollm2_dir))
    return load_causal_lm(str(smollm2_dir), dtype="float32").requires_grad_(False), tok


@pytest.mark.integration
def test_build_save_load_on_the_real_teacher(teacher, tmp_path):
    model, tok = teacher
    settings = GatherSettings(keying="observed", max_length=16, batch_tokens=64, cap_per_source=3)
    res = gather(model, tok, [TEXTS[:6], TEXTS[6:]], settings, progress=False)
    ids = tok(TEXTS, add_special_tokens=True)["input_ids"]
    assert res.tokens == sum(len(i) for i in ids)
    assert int(res.occurrences.sum()) == res.positions == sum(len(i) - 1 for i in ids)
    # per-source cap 3, overall cap 4: " bank" follows "The" twice per text set -> capped
    sample = overall_sample(res, 4)
    keys, counts, rows = sample.grouped()
    assert counts.max() <= 4 and rows.shape[1] == model.config.hidden_size
    cent_keys, cents, n, _ = cluster(
        sample, k=2, iters=20, seed=0, device=torch.device("cpu"), out_dtype=torch.float32
    )
    assert torch.equal(cent_keys, keys) and torch.equal(n, counts.clamp(max=2))
    bank = tok(" bank", add_special_tokens=False)["input_ids"]
    vid = model.config.vocab_size
    meta = {"teacher": "smollm2", "tokenizer_fingerprint": "f", "keying": "observed", "vocab_size": vid}
    d, n_vids = assemble(cent_keys, cents, n, meta, {vid: (bank[0], bank[0]), vid + 1: (bank[0], 3)})
    assert n_vids == 1
    d.save(tmp_path)
    back = SenseDictionary.load(tmp_path, device="cpu")
    s, m = back.lookup(torch.tensor([bank[0], vid, vid + 1]))
    assert m[0].sum() == 2 and torch.allclose(s[1], s[0])  # a VID of twice the same token = its senses
    assert not m[2].any()


@pytest.mark.integration
def test_a_corpus_without_positions_is_an_error(teacher):
    model, tok = teacher
    settings = GatherSettings(keying="predicted", max_length=16, batch_tokens=64, cap_per_source=3)
    res = gather(model, tok, [["a"]], settings)
    with pytest.raises(DSKDError, match="no key"):
        cluster(overall_sample(res, 4), 2, 5, 0, torch.device("cpu"), torch.float32)


def test_sense_mse_statistics_against_a_per_row_loop():
    g = torch.Generator().manual_seed(0)
    keys = torch.tensor([4] * 7 + [9] * 3 + [2] * 1)
    rows = torch.randn(len(keys), 5, generator=g)
    sample = KeyedReservoir(100)
    sample.add(keys, rows, torch.rand(len(keys), generator=g))
    cent_keys, cents, n, _ = cluster(sample, 2, 20, 0, torch.device("cpu"), torch.float32)
    stats = sense_mse_statistics(sample, cents, n, seed=0)
    grouped_keys, counts, grouped = sample.grouped()
    row_key = grouped_keys.repeat_interleave(counts)

    def nearest(x, key):
        i = cent_keys.tolist().index(key)
        return float(((x - cents[i, : int(n[i])]) ** 2).mean(-1).min())

    own = [nearest(x, int(k)) for x, k in zip(grouped, row_key)]
    p = stats["own_sense_mse_percentiles"]
    assert len(p) == 101 and p[0] == pytest.approx(0.0, abs=1e-6)  # key 2: one row, its own centroid
    assert p[100] == pytest.approx(max(own), rel=1e-5) and p[50] == pytest.approx(
        float(np.median(own)), rel=1e-5
    )
    unrelated = stats["unrelated_sense_mse_percentiles"]
    lo = [min(nearest(x, other) for other in (2, 4, 9) if other != int(k)) for x, k in zip(grouped, row_key)]
    hi = [max(nearest(x, other) for other in (2, 4, 9) if other != int(k)) for x, k in zip(grouped, row_key)]
    assert min(lo) - 1e-5 <= unrelated[0] and unrelated[100] <= max(hi) + 1e-5  # always another key
    assert unrelated[50] > p[50]  # another key's senses are farther than one's own


@pytest.mark.integration
def test_reservoir_cap_per_source(teacher, tmp_path):
    """senses.sources[].reservoir_cap (the paper: 50 general text, 100 task data) caps the rows per key
    of its source; the other sources keep senses.cap_per_source."""
    model, tok = teacher
    (tmp_path / "a.txt").write_text("\n\n".join(TEXTS) + "\n")
    cfg = ExperimentConfig()
    text = str(tmp_path / "a.txt")
    cfg.senses.sources = [
        SourceConfig(kind="text", path=text, reservoir_cap=1),
        SourceConfig(kind="text", path=text, reservoir_cap=3),
        SourceConfig(kind="text", path=text),
    ]
    cfg.senses.cap_per_source, cfg.senses.keying, cfg.senses.max_length = 2, "observed", 16
    res = gather_from_config(model, tok, cfg.senses, cfg.seed)
    # " bank" is the observed next token 6 times in each source: every reservoir is full for it
    counts = [dict(zip(*[t.tolist() for t in r.grouped()[:2]])) for r in res.reservoirs]
    bank = tok(" bank", add_special_tokens=False)["input_ids"][0]
    assert [c[bank] for c in counts] == [1, 3, 2]
    assert [max(c.values()) for c in counts] == [1, 3, 2]
