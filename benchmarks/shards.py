"""Benchmark: what each rank reads and tokenizes of the training stream, at 1, 2 and 8 simulated ranks.

The tiny preset's training data (the WordNet corpus asset, 22.7 MB of JSONL; ``--quick``: its
example sentences, 7.2 MB), with the preset's validation hold-out. Each rank of N is simulated in one
process as its DataLoader would run it (``PackedStream(spec, tokenizer, rank, N)``, no workers): the
bytes of every rank are counted, the documents tokenized and the seconds of rank 0's shard measured.
Baseline, measured in the same run: today's reading, where every rank read the whole stream and kept
every N-th document (the bytes of one whole read; the documents of the whole stream; for the
seconds, rank 0's shard read that way and tokenized). The index (one full read per file, kept in
``$DSKD_INDEX_DIR``) is built first into a temporary folder and reported apart.
"""

from __future__ import annotations

import os
import tempfile
import time
from unittest.mock import patch

from benchmarks.harness import Figure

RANKS = (1, 2, 8)


def _todays_documents(spec, shard: int, num_shards: int, stats=None):
    """The shard's documents as every rank read them before dskd.corpora.shards: the whole stream."""
    from dskd.corpora.sources import is_validation, iter_documents

    docs = iter_documents(spec.sources, seed=spec.seed, stats=stats)
    if spec.holdout != "none":
        docs = (d for d in docs if is_validation(d.text, spec.val_fraction) == (spec.holdout == "val"))
    return (d for j, d in enumerate(docs) if j % num_shards == shard)


def _seconds(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def bench_shard_reads(quick: bool) -> list[Figure]:
    from dskd.config.loading import load_config
    from dskd.corpora.config import SourceConfig
    from dskd.corpora.shards import INDEX_DIR, index_sources
    from dskd.corpora.sources import SourceStats
    from dskd.data.datamodule import DSKDDataModule
    from dskd.models.loading import load_tokenizer

    cfg = load_config("experiments/tiny/dskd.yaml", ["data.num_workers=0"])
    if quick:
        cfg.data.train = [SourceConfig(kind="wordnet_corpus", path="examples")]
    tokenizer = load_tokenizer(cfg.teacher.model)
    spec = DSKDDataModule(cfg.data, cfg.seed, tokenizer).spec(train=True)
    whole, counted = SourceStats(), []
    whole_s = _seconds(lambda: counted.append(sum(1 for _ in _todays_documents(spec, 0, 1, whole))))
    stream_docs = counted[0]
    # a fresh index folder (patch.dict restores the environment): the build is measured, not found
    with tempfile.TemporaryDirectory() as index_dir, patch.dict(os.environ, {INDEX_DIR: index_dir}):
        built = SourceStats()
        index_s = _seconds(lambda: index_sources(spec.sources, built))
        figures = [
            Figure(
                name="index build, once per file (tiny preset's training files)",
                value=index_s,
                unit="s",
                baseline=whole_s,
                baseline_name="one whole read of the stream (today: per rank and pass)",
                goal="informative",
                note=f"{built.bytes_read:,} bytes read",
            )
        ]
        for n in RANKS:
            figures += _ranks(spec, tokenizer, n, (stream_docs, whole))
    return figures


def _ranks(spec, tokenizer, n: int, stream) -> list[Figure]:
    """The figures of ``n`` simulated ranks; ``stream``: (documents of the whole stream, its reading's
    stats after a whole read)."""
    from dskd.data.stream import PackedStream

    stream_docs, whole = stream
    streams = [PackedStream(spec, tokenizer, r, n) for r in range(n)]
    new_s = _seconds(lambda: sum(1 for _ in streams[0].units(streams[0].documents(0, n))))
    for r in range(1, n):
        sum(1 for _ in streams[r].documents(r, n))
    old = PackedStream(spec, tokenizer, 0, n)
    old_s = _seconds(lambda: sum(1 for _ in old.units(_todays_documents(spec, 0, n))))
    most = max(s.read.bytes_read for s in streams)
    share = f"<= {1.1 / n:.3g} x"
    return [
        Figure(
            name=f"bytes read per rank, {n} rank{'s' * (n > 1)} (the most of any rank)",
            value=most,
            unit="bytes",
            baseline=whole.bytes_read,
            baseline_name="today: the whole stream",
            goal=share,
            met=most <= 1.1 / n * whole.bytes_read,
        ),
        Figure(
            name=f"documents tokenized by rank 0, {n} rank{'s' * (n > 1)}",
            value=streams[0].tokenized,
            unit="documents",
            baseline=stream_docs,
            baseline_name="documents of the stream",
            goal=share,
            met=streams[0].tokenized <= 1.1 / n * stream_docs,
            note=f"today's reading tokenized {old.tokenized} (its filter came before the tokenizer too)",
        ),
        Figure(
            name=f"seconds to read and tokenize rank 0's shard, {n} rank{'s' * (n > 1)}",
            value=new_s,
            unit="s",
            baseline=old_s,
            baseline_name="today: the whole stream read, every n-th document tokenized",
            goal="informative",
        ),
    ]
