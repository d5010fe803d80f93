"""Packing, sharding over ranks x workers (real DataLoader), exact resume."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dskd.core.batch import IGNORE_INDEX
from dskd.corpora.config import SourceConfig
from dskd.corpora.shards import index_sources
from dskd.corpora.sources import is_validation, iter_documents
from dskd.data.stream import PackedStream, StreamSpec, shuffled

from .conftest import random_table

pytestmark = pytest.mark.integration  # the real SmolLM2 tokenizer


def corpus(tmp_path, n=120, long_every=17):
    """Unique documents of varied length; every `long_every`-th is longer than a sequence."""
    docs = []
    for i in range(n):
        words = " ".join(f"w{i}x{j}" for j in range(60 if i % long_every == long_every - 1 else 1 + i % 9))
        docs.append(f"Document {i} says {words}.")
    (tmp_path / "c.txt").write_text("\n\n".join(docs) + "\n")
    return docs, [SourceConfig(kind="text", path=str(tmp_path / "c.txt"))]


def batches(stream, num_workers=0):
    return list(DataLoader(stream, batch_size=None, num_workers=num_workers))


def shard_tokens(bs):
    """Non-pad tokens of each shard's sequences, concatenated in batch order."""
    out = collections.defaultdict(list)
    for b in sorted(bs, key=lambda b: (int(b["stream_shard"]), int(b["stream_batch"]))):
        for ids, att in zip(b["input_ids"], b["attention_mask"]):
            out[int(b["stream_shard"])] += ids[att.bool()].tolist()
    return out


def split_docs(tokens, eos):
    docs, cur = [], []
    for t in tokens:
        if t == eos:
            docs.append(cur)
            cur = []
        else:
            cur.append(t)
    assert not cur
    return docs


def test_packing_labels_and_padding(tmp_path, tokenizer):
    docs, sources = corpus(tmp_path, n=40)
    L = 32
    bs = batches(PackedStream(StreamSpec(sources, seq_len=L, batch_size=3), tokenizer))
    eos = tokenizer.eos_token_id
    enc = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    stream_ids = [t for ids in enc for t in [*ids, eos]]
    stream_labels = [t for ids in enc for t in [*ids[1:], eos, IGNORE_INDEX]]
    got_ids, got_labels = [], []
    for b in bs:
        for ids, att, lab in zip(b["input_ids"], b["attention_mask"], b["labels"]):
            n = int(att.sum())
            assert att[:n].all() and not att[n:].any()  # right padding
            assert (lab[n:] == IGNORE_INDEX).all() and (ids[n:] == tokenizer.pad_token_id).all()
            if n < L:  # padded only because the next whole document did not fit
                assert ids[n - 1] == eos
                nxt = next(
                    (j for j in range(len(enc)) if sum(len(e) + 1 for e in enc[: j + 1]) > len(got_ids) + n),
                    None,
                )
                assert nxt is None or n + len(enc[nxt]) + 1 > L
            got_ids += ids[:n].tolist()
            got_labels += lab[:n].tolist()
    assert got_ids == stream_ids and got_labels == stream_labels


def test_long_document_is_split_with_labels_across_the_cut(tmp_path, tokenizer):
    words = " ".join(f"word{j}" for j in range(100))
    (tmp_path / "l.txt").write_text(words + "\n")
    L = 16
    bs = batches(
        PackedStream(
            StreamSpec([SourceConfig(kind="text", path=str(tmp_path / "l.txt"))], seq_len=L, batch_size=2),
            tokenizer,
        )
    )
    seqs = [(ids, lab) for b in bs for ids, lab in zip(b["input_ids"], b["labels"])]
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    assert len(seqs) == -(-(len(ids) + 1) // L)
    for k in range(len(seqs) - 1):
        assert seqs[k][0].tolist() == ids[k * L : (k + 1) * L]
        assert seqs[k][1][-1].item() == ids[(k + 1) * L]  # label of the last position crosses the cut


def test_unpacked_one_document_per_sequence(tmp_path, tokenizer):
    docs, sources = corpus(tmp_path, n=10, long_every=100)
    bs = batches(PackedStream(StreamSpec(sources, seq_len=64, batch_size=4, pack=False), tokenizer))
    seqs = [ids[att.bool()] for b in bs for ids, att in zip(b["input_ids"], b["attention_mask"])]
    assert len(seqs) == 10 and all((s == tokenizer.eos_token_id).sum() == 1 for s in seqs)


def test_unpacked_sequences_give_each_prompt_its_own_positions_and_context(tmp_path, tokenizer):
    """pack=False (the paper presets): a right-padded sequence gives the model the hidden states of its
    document alone (positions from 0, no attention to another document or to padding), unlike packing,
    where the second document attends to the first."""
    from transformers import LlamaForCausalLM

    from dskd.testing.fixtures import llama_config

    docs, sources = corpus(tmp_path, n=2, long_every=100)
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(len(tokenizer), hidden=16, layers=2)).eval()

    def hidden(ids, mask=None):
        with torch.no_grad():
            return model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state

    (b,) = batches(PackedStream(StreamSpec(sources, seq_len=40, batch_size=2, pack=False), tokenizer))
    h = hidden(b["input_ids"], b["attention_mask"])
    alone = []
    for row, ids, att in zip(h, b["input_ids"], b["attention_mask"]):
        n = int(att.sum())
        alone.append(hidden(ids[None, :n])[0])
        torch.testing.assert_close(row[:n], alone[-1], rtol=1e-5, atol=1e-5)
    assert int(b["attention_mask"][0].sum()) != int(b["attention_mask"][1].sum())  # one row is padded
    (p,) = batches(PackedStream(StreamSpec(sources, seq_len=40, batch_size=2, pack=True), tokenizer))
    first = len(alone[0])
    packed = hidden(p["input_ids"][:1], p["attention_mask"][:1])[0]
    torch.testing.assert_close(packed[:first], alone[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(packed[first : first + len(alone[1])], alone[1], atol=1e-3)


@pytest.mark.parametrize("shuffle", [0, 8])
def test_partition_two_ranks_two_workers(tmp_path, tokenizer, shuffle):
    docs, sources = corpus(tmp_path)
    spec = StreamSpec(
        sources,
        seq_len=32,
        batch_size=2,
        shuffle_buffer=shuffle,
        table=random_table(len(tokenizer)),
        width=25,
    )
    got = []
    for rank in range(2):
        got += batches(PackedStream(spec, tokenizer, rank=rank, world_size=2), num_workers=2)
    ids = [(int(b["stream_shard"]), int(b["stream_batch"])) for b in got]
    assert len(set(ids)) == len(ids)  # every sequence batch exactly once
    per_shard = collections.Counter(s for s, _ in ids)
    assert sorted(per_shard) == [0, 1, 2, 3]
    assert all(
        sorted(b for s2, b in ids if s2 == s) == list(range(per_shard[s])) for s in per_shard
    )  # no gaps
    enc = {tuple(tokenizer(d, add_special_tokens=False)["input_ids"]): j for j, d in enumerate(docs)}
    seen = []
    for shard, tokens in shard_tokens(got).items():
        got_docs = [enc[tuple(d)] for d in split_docs(tokens, tokenizer.eos_token_id)]
        assert sorted(got_docs) == [j for j in range(len(docs)) if j % 4 == shard]
        if not shuffle:
            assert got_docs == sorted(got_docs)
        seen += got_docs
    assert sorted(seen) == list(range(len(docs)))  # no duplicates, no gaps


def test_sense_sampling_is_seeded_per_sequence(tmp_path, tokenizer):
    docs, sources = corpus(tmp_path, n=30)
    spec = StreamSpec(sources, seq_len=32, batch_size=2, table=random_table(len(tokenizer), p=0.8), width=25)
    a, b = batches(PackedStream(spec, tokenizer)), batches(PackedStream(spec, tokenizer))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    other = PackedStream(spec, tokenizer)
    other.epoch = 1
    c = batches(other)
    assert any(not torch.equal(x["sense_pos"], y["sense_pos"]) for x, y in zip(a, c))
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c))  # no shuffle buffer


def test_skip_resumes_shard_exactly(tmp_path, tokenizer):
    docs, sources = corpus(tmp_path)
    spec = StreamSpec(
        sources, seq_len=32, batch_size=2, shuffle_buffer=8, table=random_table(len(tokenizer)), width=25
    )
    full = batches(PackedStream(spec, tokenizer))
    resumed = PackedStream(spec, tokenizer)
    resumed.skip = {0: 5}
    rest = batches(resumed)
    assert len(rest) == len(full) - 5
    assert all(torch.equal(x[k], y[k]) for x, y in zip(full[5:], rest) for k in x)


def test_gold_synset_positions_restrict_neighbours(tokenizer):
    from dskd.corpora.sources import Document
    from dskd.data.stream import gold_labels

    text = "we sat on the bank of the river"
    start = text.index("bank")
    doc = Document(text, "t", {"synset": "bank.n.01", "span": (start, start + 4)})
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    gold = gold_labels(doc, enc["offset_mapping"])
    assert len(gold) == 1
    p, synset = gold[0]
    assert synset == "bank.n.01" and tokenizer.convert_ids_to_tokens(enc["input_ids"][p + 1]) == "Ġbank"
    assert np.asarray(enc["input_ids"]).size == 8


def test_sense_aligned_neighbours_on_wordnet_examples(tokenizer):
    """Targets inside a WordNet example's lemma span keep only their synset's keys (here: the even keys)."""
    table = random_table(len(tokenizer), seed=2, p=0.9)
    table.synset_keys = lambda name: (np.arange(0, 2 * len(tokenizer) + 2000, 2), np.zeros(0, dtype=np.int64))
    src = [SourceConfig(kind="wordnet_corpus", path="examples", max_records=300)]
    spec = StreamSpec(src, seq_len=32, batch_size=4, table=table, width=25, aligned=True)
    stream = PackedStream(spec, tokenizer)
    seqs = list(stream.sequences(stream.units(stream.documents(0, 1))))
    assert sum(len(s.gold) for s in seqs) > 200  # most examples have their lemma span
    checked_gold = 0
    for b in batches(stream):
        for i in range(len(b["input_ids"])):
            gold = {p for p, _ in seqs[int(b["stream_batch"]) * 4 + i].gold}
            for j in np.flatnonzero(b["sense_pos_mask"][i].numpy()):
                p = int(b["sense_pos"][i, j])
                row = table.row("syn", int(b["labels"][i, p]))
                allowed = row[row % 2 == 0] if p in gold else row
                keys = b["syn_keys"][i, j][b["syn_mask"][i, j]].numpy()
                assert set(keys) <= set(allowed) and len(keys) == min(25, len(allowed))
                checked_gold += p in gold
    assert checked_gold > 20


def test_prompt_lengths_follow_the_unit_that_starts_a_sequence(tokenizer):
    """The on-policy prefix: a QA prompt's tokens, carried by the sequence its unit starts (and by the
    first piece of a unit split across sequences), 0 elsewhere; ``prompt_len`` in each batch."""
    from dskd.corpora.sources import Document
    from dskd.data.stream import _Unit, prompt_tokens

    prompt = "User: What is a bank?\nAssistant: "
    text = prompt + "A river side."
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    n = prompt_tokens(Document(text, "qa", {"prompt": prompt}), enc["offset_mapping"])
    # the space ending the prompt belongs to the answer's first token (" A"), outside the prompt
    assert tokenizer.decode(enc["input_ids"][:n]) == prompt.rstrip(" ")
    assert prompt_tokens(Document(text, "t"), enc["offset_mapping"]) == 0
    assert prompt_tokens(Document("Other text", "qa", {"prompt": prompt}), [(0, 5), (5, 10)]) == 0

    spec = StreamSpec([], seq_len=6, batch_size=3, prompt_lengths=True)
    stream = PackedStream(spec, tokenizer)
    units = [
        _Unit([1, 2, 3], [2, 3, -100], prompt=2),
        _Unit([4, 5], [5, -100]),
        _Unit(list(range(9)), list(range(9)), prompt=7),
    ]
    seqs = list(stream.sequences(iter(units)))
    assert [(s.ids, s.prompt) for s in seqs] == [
        ([1, 2, 3, 4, 5], 2),
        ([0, 1, 2, 3, 4, 5], 6),
        ([6, 7, 8], 0),
    ]
    batch = stream.collate(seqs, 0, [0, 1, 2])
    assert batch["prompt_len"].tolist() == [2, 6, 0]


SENSE_KEYS = ("sense_pos", "sense_pos_mask", "syn_keys", "ant_keys", "rand_pos")


def by_sequence(bs):
    """Every row of ``bs`` as (shard, tokens, labels, its sense arrays), sorted."""
    out = []
    for b in bs:
        for i, (ids, att) in enumerate(zip(b["input_ids"], b["attention_mask"])):
            n = int(att.sum())
            sense = [b[k][i].tolist() for k in SENSE_KEYS if k in b]
            out.append((int(b["stream_shard"]), ids[:n].tolist(), b["labels"][i, :n].tolist(), sense))
    return sorted(out)


def test_pad_to_longest_batch_one_has_no_padding_and_the_same_sequences(tmp_path, tokenizer):
    _, sources = corpus(tmp_path, n=40)
    spec = dict(seq_len=32, batch_size=1, pack=False, table=random_table(len(tokenizer), p=0.8), width=25)
    longest = batches(PackedStream(StreamSpec(sources, pad_to="longest", **spec), tokenizer))
    full = batches(PackedStream(StreamSpec(sources, pad_to="seq_len", **spec), tokenizer))
    assert len(longest) == len(full) > 40  # documents longer than 32 tokens are cut into pieces
    widths = {b["input_ids"].shape[1] for b in longest}
    assert len(widths) > 5 and max(widths) == 32
    for a, b in zip(longest, full):
        W = a["input_ids"].shape[1]
        assert b["input_ids"].shape[1] == 32 and a["attention_mask"].all()
        assert int(b["attention_mask"].sum()) == W
        for k in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(a[k], b[k][:, :W])
        for k in SENSE_KEYS:
            assert torch.equal(a[k], b[k])


def test_bucketing_keeps_every_sequence_and_its_sense_draw_and_cuts_the_padding(tmp_path, tokenizer):
    _, sources = corpus(tmp_path, n=120)
    spec = dict(seq_len=32, batch_size=4, pack=False, shuffle_buffer=16, table=random_table(len(tokenizer)))
    spec["width"] = 25
    bucketed = batches(PackedStream(StreamSpec(sources, pad_to="longest", **spec), tokenizer), num_workers=2)
    plain = batches(PackedStream(StreamSpec(sources, pad_to="seq_len", **spec), tokenizer), num_workers=2)
    assert len(bucketed) == len(plain)
    # the same sequences, each with the same labels and the same sense draw, in other batches
    assert by_sequence(bucketed) == by_sequence(plain)
    assert [b["input_ids"][:, 0].tolist() for b in bucketed] != [b["input_ids"][:, 0].tolist() for b in plain]
    real = sum(int(b["attention_mask"].sum()) for b in bucketed)
    padded = sum(b["input_ids"].numel() for b in bucketed)
    unbucketed = sum(4 * max(int(r.sum()) for r in b["attention_mask"]) for b in plain)  # longest, no buckets
    assert real / padded > 0.9 and padded < unbucketed


def test_bucketed_batches_are_seeded_and_resume_lands_on_the_same_batch(tmp_path, tokenizer):
    _, sources = corpus(tmp_path, n=120)
    spec = StreamSpec(sources, seq_len=32, batch_size=3, pack=False, shuffle_buffer=8, seed=5)
    first = batches(PackedStream(spec, tokenizer))
    again = batches(PackedStream(spec, tokenizer))
    assert len(first) == len(again) > 10
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again))
    resumed_stream = PackedStream(spec, tokenizer)
    resumed_stream.skip = {0: 7}
    resumed = batches(resumed_stream)
    assert [int(b["stream_batch"]) for b in resumed] == list(range(7, len(first)))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first[7:], resumed))
    other = batches(
        PackedStream(
            StreamSpec(sources, seq_len=32, batch_size=3, pack=False, shuffle_buffer=8, seed=6), tokenizer
        )
    )
    assert [b["input_ids"].shape for b in other] != [b["input_ids"].shape for b in first]
    epoch1 = PackedStream(spec, tokenizer)
    epoch1.epoch = 1
    assert [b["input_ids"].shape for b in batches(epoch1)] != [b["input_ids"].shape for b in first]


class TodaysStream(PackedStream):
    """The reference: the stream as every shard read it before dskd.corpora.shards, the whole stream
    with every num_shards-th document kept."""

    def documents(self, shard, num_shards):
        spec = self.spec
        docs = iter_documents(spec.sources, self.tokenizer, seed=spec.seed)
        if spec.holdout != "none":
            docs = (d for d in docs if is_validation(d.text, spec.val_fraction) == (spec.holdout == "val"))
        mine = (d for j, d in enumerate(docs) if j % num_shards == shard)
        rng = np.random.default_rng([spec.seed, self.epoch, shard, 1])
        return shuffled(mine, spec.shuffle_buffer, rng) if spec.shuffle_buffer > 1 else mine


class CountingStream(PackedStream):
    """Yields after its batches what its process (a DataLoader worker) read and tokenized."""

    def __iter__(self):
        yield from super().__iter__()
        yield {"shard": self.shard()[0], "tokenized": self.tokenized, "bytes": self.read.bytes_read}


def same_batches(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


@pytest.mark.parametrize(("world", "workers"), [(2, 0), (3, 0), (2, 2)])
def test_each_rank_gets_todays_batches_reading_and_tokenizing_only_its_shard(
    tmp_path, tokenizer, world, workers
):
    docs, sources = corpus(tmp_path, n=300)
    spec = StreamSpec(
        sources,
        seq_len=32,
        batch_size=3,
        shuffle_buffer=8,
        holdout="train",
        val_fraction=0.2,
        table=random_table(len(tokenizer)),
        width=25,
    )
    index_sources(sources)  # as DSKDDataModule.prepare_data does before the ranks start
    size, shards = (tmp_path / "c.txt").stat().st_size, world * max(1, workers)
    for rank in range(world):
        got = batches(CountingStream(spec, tokenizer, rank, world), workers)
        counts = [b for b in got if "tokenized" in b]
        assert same_batches(
            [b for b in got if "tokenized" not in b],
            batches(TodaysStream(spec, tokenizer, rank, world), workers),
        )
        assert sorted(int(c["shard"]) for c in counts) == list(
            range(rank * max(1, workers), (rank + 1) * max(1, workers))
        )
        for c in counts:
            own = list(TodaysStream(spec, tokenizer).documents(int(c["shard"]), shards))
            assert int(c["tokenized"]) == len(own)  # no document of another shard is tokenized
            assert int(c["bytes"]) == sum(len(d.text.encode()) + 1 for d in own)  # its lines, no other
            assert int(c["bytes"]) < 0.8 * 1.3 * size / shards


def test_a_resumed_rank_skips_to_todays_batches_tokenizing_only_its_shard(tmp_path, tokenizer):
    docs, sources = corpus(tmp_path, n=200)
    spec = StreamSpec(
        sources, seq_len=32, batch_size=2, shuffle_buffer=8, table=random_table(len(tokenizer)), width=25
    )
    new, old = PackedStream(spec, tokenizer, 1, 3), TodaysStream(spec, tokenizer, 1, 3)
    new.skip = old.skip = {1: 4}
    new.epoch = old.epoch = 2
    assert same_batches(batches(new), batches(old))
    assert new.tokenized == len(list(old.documents(1, 3))) == len([j for j in range(200) if j % 3 == 1])
