"""Benchmark: data pipeline throughput (tokens per second per worker) on the tiny preset.

Baseline measured in the same run: the fast tokenizer alone over the same documents (the floor of
any pipeline). The pipeline figure covers reading, tokenizing, packing, sense sampling and tensor
conversion, in one process (= one DataLoader worker). Neighbours come from the preset's lexicon
(:func:`benchmarks.artifacts.preset_artifacts`).
"""

from __future__ import annotations

import time
from itertools import islice

from benchmarks.harness import Figure

GOAL = 50_000


def _table(cfg, tokenizer, quick: bool):
    """Neighbours from the preset's lexicon."""
    from benchmarks.artifacts import preset_artifacts
    from dskd.data.sampling import NeighbourTable
    from dskd.lexicon import Lexicon

    lexicon = Lexicon.load(preset_artifacts(cfg, quick).lexicon.output_dir)
    lexicon.check_tokenizer(tokenizer)
    return NeighbourTable.from_lexicon(lexicon)


def bench_data_throughput(quick: bool) -> list[Figure]:
    from dskd.config.loading import load_config
    from dskd.corpora.sources import iter_documents
    from dskd.data.datamodule import DSKDDataModule
    from dskd.data.stream import PackedStream
    from dskd.models.loading import load_tokenizer

    cfg = load_config("experiments/tiny/dskd.yaml", ["data.num_workers=0"])
    tokenizer = load_tokenizer(cfg.teacher.model)
    table = _table(cfg, tokenizer, quick)
    n_batches = 150 if quick else 1500
    docs = [d.text for d in islice(iter_documents(cfg.data.train), 20_000)]
    figures = []
    for aligned in (False, True) if table.synset_keys else (False,):
        cfg.data.sense_aligned_neighbours = aligned
        spec = DSKDDataModule(cfg.data, cfg.seed, tokenizer).spec(train=True)
        spec.table = table
        it = iter(PackedStream(spec, tokenizer))
        next(it)  # warm-up: first documents, lazy imports
        t0 = time.perf_counter()
        tokens = sum(int(b["attention_mask"].sum()) for b in islice(it, n_batches))
        rate = tokens / (time.perf_counter() - t0)
        t0, done = time.perf_counter(), 0  # baseline: the tokenizer alone over as many tokens
        for i in range(0, len(docs), 256):
            done += sum(len(x) for x in tokenizer(docs[i : i + 256], add_special_tokens=False)["input_ids"])
            if done >= tokens:
                break
        base = done / (time.perf_counter() - t0)
        figures.append(
            Figure(
                name=f"data tokens/s per worker (tiny, seq 128{', sense-aligned' if aligned else ''})",
                value=rate,
                unit="tokens/s",
                baseline=base,
                baseline_name="fast tokenizer alone",
                goal=f">= {GOAL:,} tokens/s",
                met=rate >= GOAL,
                note=f"{tokens} tokens, neighbours from the preset's lexicon",
            )
        )
    return figures
