"""A shard reads only its own documents' blocks, and gets exactly the every-n-th documents of the stream."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from dskd.core.errors import DSKDError
from dskd.corpora.config import SourceConfig
from dskd.corpora.shards import index_file, index_sources, kept, shard_documents
from dskd.corpora.sources import (
    MAX_LINE_CHARS,
    SourceStats,
    is_validation,
    iter_documents,
    split_files,
    text_hash,
)

HOLDOUTS = [("none", 0.0), ("train", 0.3), ("val", 0.3)]


def every_nth(sources, shard, holdout):
    """The reference: today's reading, the whole stream filtered, every num_shards-th document kept."""
    s, n = shard
    mode, fraction = holdout
    docs = iter_documents(sources)
    if mode != "none":
        docs = (d for d in docs if is_validation(d.text, fraction) == (mode == "val"))
    return [(d.text, d.source, d.meta) for j, d in enumerate(docs) if j % n == s]


def mine(sources, shard, holdout, stats=None):
    return [(d.text, d.source, d.meta) for d in shard_documents(sources, None, 0, shard, holdout, stats)]


def mixed_corpus(tmp_path, monkeypatch):
    """Two text files (paragraphs, blank lines of spaces, CRLF, bad UTF-8, a paragraph and a line over
    MAX_LINE_CHARS), a hub data set from the mirror (never split) and two JSONL files (empty and long
    texts, a second field), the first text source cut by max_records inside its second file."""
    rng = np.random.default_rng(0)
    words = lambda k: " ".join(f"w{i}" for i in rng.integers(0, 10_000, k))  # noqa: E731
    paras = [words(int(rng.integers(1, 60))) for _ in range(150)]
    paras[7] = "\n".join(words(2500) for _ in range(3))  # one paragraph, several documents
    paras[30] = words(9000)  # one line, cut at spaces into several documents
    text_a = "\n\n  \n".join(paras[:100]).encode() + b"\r\n\r\nbad \xff byte\r\nsame paragraph\r\n"
    (tmp_path / "a.txt").write_bytes(text_a)
    (tmp_path / "b.txt").write_text("\n\n".join(paras[100:]) + "\n")
    mirror = tmp_path / "mirror" / "org" / "set" / "default"
    mirror.mkdir(parents=True)
    (mirror / "train.jsonl").write_text("".join(json.dumps({"text": words(5)}) + "\n" for _ in range(40)))
    monkeypatch.setenv("DSKD_HUB_MIRROR", str(tmp_path / "mirror"))
    for name in ("c", "d"):
        recs = [{"body": words(int(rng.integers(0, 30))), "n": i} for i in range(120)]
        recs[5]["body"] = words(5000)
        recs[9]["body"] = "   "
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    return [
        SourceConfig(kind="text", path=str(tmp_path / "*.txt"), max_records=130),
        SourceConfig(kind="hf", path="org/set"),
        SourceConfig(kind="jsonl", path=str(tmp_path / "*.jsonl"), field="body"),
    ]


@pytest.mark.parametrize("holdout", HOLDOUTS)
def test_each_shard_gets_the_every_nth_documents_of_the_whole_stream(tmp_path, monkeypatch, holdout):
    sources = mixed_corpus(tmp_path, monkeypatch)
    assert len(every_nth(sources, (0, 1), ("none", 0))) > 400
    assert any(len(t) > MAX_LINE_CHARS / 2 for t, _, _ in every_nth(sources, (0, 1), ("none", 0)))
    for n in (1, 2, 3, 8):
        for s in range(n):
            assert mine(sources, (s, n), holdout) == every_nth(sources, (s, n), holdout), (s, n)


def test_a_shard_reads_about_its_share_of_the_bytes(tmp_path):
    docs = [" ".join(f"d{i}w{j}" for j in range(40)) for i in range(800)]
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(docs) + "\n")
    sources = [SourceConfig(kind="text", path=str(path))]
    built = SourceStats()
    index_sources(sources, built)
    assert built.bytes_read == path.stat().st_size  # the index: one full read, once
    for n in (1, 2, 8):
        reads = [SourceStats() for _ in range(n)]
        for s in range(n):
            assert mine(sources, (s, n), ("none", 0), reads[s]) == every_nth(sources, (s, n), ("none", 0))
        share = [r.bytes_read / path.stat().st_size for r in reads]
        assert all(abs(x - 1 / n) < 0.01 for x in share), share  # only the shard's paragraphs


def test_the_index_is_kept_and_rebuilt_when_the_file_changes(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(30)))
    sources = [SourceConfig(kind="jsonl", path=str(path))]
    stats = SourceStats()
    assert mine(sources, (1, 3), ("none", 0), stats) == every_nth(sources, (1, 3), ("none", 0))
    first = stats.bytes_read
    kept_index = index_file(split_files(sources[0])[0])
    assert kept_index.is_file() and first > path.stat().st_size  # built (full read) + the shard's lines
    stats = SourceStats()
    mine(sources, (1, 3), ("none", 0), stats)
    assert stats.bytes_read < first - path.stat().st_size + 3  # the kept index: no full read again
    with open(path, "a") as f:
        f.write("".join(json.dumps({"text": f"new {i}"}) + "\n" for i in range(7)))
    assert index_file(split_files(sources[0])[0]) != kept_index
    assert mine(sources, (1, 3), ("none", 0)) == every_nth(sources, (1, 3), ("none", 0))
    assert "new 1" in [t for t, _, _ in mine(sources, (1, 3), ("none", 0))]  # document 31


def test_an_index_that_cannot_be_kept_is_built_again_by_each_reader(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DSKD_INDEX_DIR", str(tmp_path / "file" / "sub"))  # cannot be created
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(f"para {i}" for i in range(20)))
    sources = [SourceConfig(kind="text", path=str(path))]
    for _ in range(2):
        stats = SourceStats()
        assert mine(sources, (0, 2), ("none", 0), stats) == every_nth(sources, (0, 2), ("none", 0))
        assert stats.bytes_read > path.stat().st_size


def test_a_bad_line_raises_where_the_whole_read_reaches_it_and_not_beyond(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(10)) + "{not json\n")
    short = [SourceConfig(kind="jsonl", path=str(path), max_records=10)]
    assert mine(short, (1, 2), ("none", 0)) == every_nth(short, (1, 2), ("none", 0))
    with pytest.raises(DSKDError, match=r"c.jsonl:11 is not valid JSON"):
        mine([SourceConfig(kind="jsonl", path=str(path))], (1, 2), ("none", 0))


def test_subset_seed_sources_are_read_whole_with_the_same_draw(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(f"para {i}" for i in range(200)))
    sources = [SourceConfig(kind="text", path=str(path), max_records=50, subset_seed=3)]
    stats = SourceStats()
    assert mine(sources, (2, 4), ("train", 0.2), stats) == every_nth(sources, (2, 4), ("train", 0.2))
    assert stats.bytes_read == path.stat().st_size


def test_kept_decides_the_holdout_as_is_validation():
    texts = [f"text {i}" for i in range(5000)]
    hashes = np.array([text_hash(t) for t in texts], dtype=np.uint64)
    edge = np.array([0, 2**63, 2**64 - 1, 2**64 - 2**10], dtype=np.uint64)
    for fraction in (0.0, 0.01, 0.5, 0.999999):
        val = np.array([is_validation(t, fraction) for t in texts])
        assert (kept(hashes, ("val", fraction)) == val).all() and (
            kept(hashes, ("train", fraction)) == ~val
        ).all()
        by_int = [fraction > 0 and int(h) / 2**64 < fraction for h in edge]
        assert kept(edge, ("val", fraction)).tolist() == by_int
    assert kept(hashes, ("none", 0.5)).all()
    assert 2000 < kept(hashes, ("val", 0.5)).sum() < 3000


@pytest.mark.integration
def test_wordnet_corpus_shards_match_the_whole_read():
    sources = [SourceConfig(kind="wordnet_corpus")]
    stats = SourceStats()
    index_sources(sources, stats)
    files = split_files(sources[0])
    total = sum(os.path.getsize(f.path) for f in files)
    assert stats.bytes_read == total
    for s in (0, 3):
        read = SourceStats()
        assert mine(sources, (s, 4), ("train", 0.1), read) == every_nth(sources, (s, 4), ("train", 0.1))
        assert abs(read.bytes_read / total - 0.9 / 4) < 0.01  # a quarter of the 90% not held out


def test_a_shard_warns_once_per_file_of_its_lines_that_are_not_utf8(tmp_path, caplog):
    path = tmp_path / "c.txt"
    path.write_bytes(b"\n\n".join(b"para %d \xff" % i for i in range(40)))
    sources = [SourceConfig(kind="text", path=str(path))]
    index_sources(sources)  # warns as a whole read does
    stats = SourceStats()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dskd.corpora"):
        docs = mine(sources, (1, 4), ("none", 0), stats)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: 10 lines this shard read had bytes that are not UTF-8 (replaced)"
    ]
    assert docs == every_nth(sources, (1, 4), ("none", 0)) and stats.bad_utf8_lines == 10


def test_an_index_that_cannot_be_read_is_built_again(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(f"para {i}" for i in range(20)))
    sources = [SourceConfig(kind="text", path=str(path))]
    index_sources(sources)
    kept_index = index_file(split_files(sources[0])[0])
    kept_index.write_bytes(b"not an npz")
    assert mine(sources, (1, 3), ("none", 0)) == every_nth(sources, (1, 3), ("none", 0))
    assert kept_index.read_bytes()[:2] == b"PK"  # a zip (npz) again
