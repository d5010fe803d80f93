"""`dskd lexicon build`: sources -> signed word relations -> tokenizer keys -> artifact folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dskd.assets import wordnet as asset_wordnet
from dskd.config.schema import ExperimentConfig
from dskd.core.errors import DSKDError
from dskd.core.io import file_digests, provenance, sha256_file, write_text_atomic
from dskd.core.outputs import StageResult, artifact_dir, check_output
from dskd.core.stopping import stop_cleanly
from dskd.lexicon.artifact import DATA_FILES, FORMAT_VERSION, save_arrays, write_meta
from dskd.lexicon.config import LexiconConfig
from dskd.lexicon.mapping import MappedLexicon, map_to_tokenizer
from dskd.lexicon.polarity import DEFAULT_RULES, AffixRules
from dskd.lexicon.relations import combine
from dskd.lexicon.sources import SourceData, load_source
from dskd.models.loading import load_tokenizer, tokenizer_fingerprint


@dataclass
class BuiltLexicon:
    mapped: MappedLexicon
    stats: dict[str, Any]
    sources: list[dict[str, Any]]
    """Name, kind, path and sha256 of each source; bit i of a source mask is sources[i]."""


def load_sources(cfg: LexiconConfig, wordnet: Callable[[], Any] = asset_wordnet) -> list[SourceData]:
    """Read every configured source (``wordnet`` is called only when a WordNet source is configured)."""
    if not cfg.sources:
        raise DSKDError("`lexicon.sources` is empty: list at least one source (e.g. `- kind: wordnet`).")
    data = [load_source(s, cfg, wordnet) for s in cfg.sources]
    names = [d.name for d in data]
    if len(set(names)) != len(names):
        raise DSKDError(f"Lexicon sources need distinct names, got {names}; set `name:` on each source.")
    return data


def build_lexicon(
    cfg: LexiconConfig,
    tokenizer: Any,
    tokenizer_name: str,
    wordnet: Callable[[], Any] = asset_wordnet,
) -> BuiltLexicon:
    """Build the lexicon of ``cfg`` for ``tokenizer`` in memory; raise DSKDError when it is empty."""
    t0 = time.perf_counter()
    built = build_from_sources(cfg, load_sources(cfg, wordnet), tokenizer, tokenizer_name)
    built.stats["build_seconds"] = round(time.perf_counter() - t0, 2)
    return built


def build_from_sources(
    cfg: LexiconConfig, data: list[SourceData], tokenizer: Any, tokenizer_name: str
) -> BuiltLexicon:
    """Combine already-read sources, apply polarity and map onto ``tokenizer`` (see :func:`build_lexicon`)."""
    names = [d.name for d in data]
    rules = AffixRules.load(cfg.affix_rules) if cfg.negation_polarity else None
    rel = combine(data, cfg.negation_polarity, rules)
    synsets: dict[str, tuple[list[str], list[str]]] = {}
    for d in data:
        synsets.update(d.synsets or {})
    mapped = map_to_tokenizer(rel, tokenizer, cfg, synsets)
    if mapped.syn.indices.size + mapped.ant.indices.size + mapped.hyp.indices.size == 0:
        raise DSKDError(
            f"The lexicon is empty: no relation of the sources {names} has a head word that is one token of "
            f"tokenizer '{tokenizer_name}' and a neighbour of 1..{cfg.max_neighbour_tokens} tokens. "
            "Check the source files, the tokenizer and `lexicon.single_token_neighbours` / "
            "`max_neighbour_tokens`."
        )
    stats: dict[str, Any] = {
        "tokenizer": tokenizer_name,
        "vocab_size": mapped.vocab_size,
        "heads_with_synonyms": mapped.syn.n_heads,
        "heads_with_antonyms": mapped.ant.n_heads,
        "heads_with_hypernyms": mapped.hyp.n_heads,
        "synonym_pairs": int(mapped.syn.indices.size),
        "antonym_pairs": int(mapped.ant.indices.size),
        "hypernym_pairs": int(mapped.hyp.indices.size),
        "vids": len(mapped.vid_tokens),
        "synsets": len(mapped.synset_names),
        "pairs_per_source": _pairs_per_source(mapped, rel.source_names),
        **rel.stats,
    }
    sources = [
        {"name": d.name, "kind": s.kind, "path": d.path, "sha256": d.sha256, "bit": i}
        for i, (s, d) in enumerate(zip(cfg.sources, data))
    ]
    if cfg.negation_polarity:
        rules_path = Path(cfg.affix_rules) if cfg.affix_rules else DEFAULT_RULES
        rule = {"name": rel.source_names[-1], "kind": "rule", "path": str(rules_path)}
        sources.append({**rule, "sha256": sha256_file(rules_path), "bit": len(data)})
    return BuiltLexicon(mapped, stats, sources)


def _pairs_per_source(mapped: MappedLexicon, names: list[str]) -> dict[str, dict[str, int]]:
    """Token-level (head, key) entries each source contributed to, per relation."""
    out: dict[str, dict[str, int]] = {}
    for i, name in enumerate(names):
        out[name] = {
            f"{label}_pairs": int(((getattr(mapped, rel).sources >> i) & 1).sum())
            for rel, label in (("syn", "synonym"), ("ant", "antonym"), ("hyp", "hypernym"))
        }
    return out


@stop_cleanly("the lexicon build")
def build(cfg: ExperimentConfig, overwrite: bool = False) -> StageResult:
    """The lexicon stage: build the lexicon of a config and write it to ``cfg.lexicon.output_dir`` (see
    :func:`dskd.outputs.check_output` for ``overwrite``)."""
    check_output(cfg.lexicon.output_dir, "lexicon", overwrite)

    tokenizer_name = cfg.lexicon.tokenizer or cfg.teacher.model
    tokenizer = load_tokenizer(tokenizer_name)
    if not getattr(tokenizer, "is_fast", False):
        raise DSKDError(f"Tokenizer '{tokenizer_name}' has no fast (Rust) version; the lexicon needs one.")
    built = build_lexicon(cfg.lexicon, tokenizer, tokenizer_name)
    out = write_lexicon(cfg.lexicon, built, tokenizer, tokenizer_name, cfg.to_yaml(), overwrite)
    return StageResult(out, built.stats)


def write_lexicon(
    lexicon: LexiconConfig,
    built: BuiltLexicon,
    tokenizer: Any,
    tokenizer_name: str,
    config_yaml: str,
    overwrite: bool = False,
) -> Path:
    """Write ``built`` atomically to ``lexicon.output_dir`` with its metadata, stats and the experiment's
    resolved config (``config_yaml``, as config.yaml)."""
    meta = {
        "format_version": FORMAT_VERSION,
        "tokenizer": {
            "name": tokenizer_name,
            "vocab_size": built.mapped.vocab_size,
            "fingerprint": tokenizer_fingerprint(tokenizer),
        },
        "sources": built.sources,
        "lexicon_config": asdict(lexicon),
        "provenance": provenance("lexicon", {s["name"]: s["sha256"] or s["kind"] for s in built.sources}),
    }
    out = Path(lexicon.output_dir)
    inputs = [s["path"] for s in built.sources if s.get("path")]
    with artifact_dir(out, "lexicon", overwrite, inputs) as tmp:
        save_arrays(built.mapped, tmp)
        meta["files"] = file_digests(tmp, list(DATA_FILES))
        write_meta(tmp, meta, built.stats)
        write_text_atomic(tmp / "config.yaml", config_yaml)
    return out
