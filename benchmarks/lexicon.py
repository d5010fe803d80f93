"""Benchmark: building the WordNet lexicon for the SmolLM2 tokenizer (goal: at most 60 s on 2 cores)."""

from __future__ import annotations

import time

from benchmarks.harness import Figure

GOAL_S = 60.0


def bench_lexicon_build(quick: bool) -> list[Figure]:
    """Build time from a fresh WordNet reader (reader load included) vs the 60 s goal; baseline: the bare
    NLTK walk over all synsets (the floor any WordNet lexicon pays). ``quick``: adjective synsets only."""
    from dskd.assets import asset_path, open_wordnet
    from dskd.lexicon.build import build_from_sources
    from dskd.lexicon.config import LexiconConfig
    from dskd.lexicon.sources import from_wordnet
    from dskd.models.loading import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    root = asset_path("wordnet")
    pos = "a" if quick else None

    t0 = time.perf_counter()
    n = sum(1 for _ in open_wordnet(root).all_synsets(pos))
    walk = time.perf_counter() - t0

    cfg = LexiconConfig()
    t0 = time.perf_counter()
    reader = open_wordnet(root)
    data = from_wordnet(reader, cfg, synsets=reader.all_synsets(pos))
    built = build_from_sources(cfg, [data], tokenizer, "smollm2-135m-instruct")
    total = time.perf_counter() - t0
    scope = "adjective synsets" if quick else "all synsets"
    note = (
        f"{n} {scope}; {built.stats['heads_with_synonyms']} heads with synonyms, {built.stats['vids']} VIDs"
    )
    return [
        Figure(
            name=f"lexicon build, WordNet ({scope}) -> SmolLM2",
            value=total,
            unit="s",
            baseline=walk,
            baseline_name="NLTK walk over the same synsets",
            goal=None if quick else f"<= {GOAL_S:.0f} s",
            met=None if quick else total <= GOAL_S,
            note=note,
        )
    ]
