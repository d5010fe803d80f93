"""Config of the lexicon stage (`dskd lexicon build`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dskd.config.ranges import ranged


@dataclass
class LexiconSourceConfig:
    """One source of word relations."""

    kind: Literal["wordnet", "wiktionary", "dict2vec", "tsv"] = "wordnet"
    """wordnet | wiktionary (wiktextract JSONL) | dict2vec (two words per line) | tsv (head, tail,
    relation and an optional part of speech, tab-separated: the format of lexicon/README.md)."""
    path: str | None = None
    """File for the importers (ignored for wordnet), e.g. lexicon/extra_relations.tsv."""
    relation: Literal["synonym", "antonym"] = "synonym"
    """Relation of every pair in a dict2vec file (synonym | antonym)."""
    name: str | None = None
    """Name of the source in the artifact's provenance (default: `kind`; `kind:file name` for importers)."""


@dataclass
class LexiconConfig:
    output_dir: str = "${artifacts_dir}/lexicon"
    """Where the lexicon artifact is written."""
    tokenizer: str | None = None
    """Tokenizer to map words onto (asset name, local folder or hub id); default: the teacher's."""
    sources: list[LexiconSourceConfig] = field(default_factory=lambda: [LexiconSourceConfig()])
    """Relation sources, combined with provenance kept."""
    single_token_neighbours: bool = True
    """Keep neighbours that are one token. False reproduces the authors' released code (multi-token only)."""
    max_neighbour_tokens: int = ranged(3, ge=1)
    """Neighbours of more tokens than this are dropped; multi-token ones become virtual ids (VIDs)."""
    min_head_chars: int = ranged(3, ge=1)
    """A head word needs at least this many characters (and `" " + word` must be one token)."""
    antonyms_extend_to_synsets: bool = True
    """An antonym pointer relates each lemma of one synset to each lemma of the antonym's synset."""
    hypernyms: bool = False
    """Add hypernym lemmas as an extra relation (for ablations; not used by the sense loss by default)."""
    negation_polarity: bool = True
    """Apply the negating-affix polarity rule (unhappy ~ sad adds happy vs sad)."""
    affix_rules: str | None = None
    """JSON file of negating-affix rules; default: lexicon/negation_affixes.json (shipped in the wheel)."""
    case_variants: bool = False
    """Also map the capitalised form of a lowercase head (" Good" for " good") when it is one token and no
    source lists it itself; it gets the same neighbour keys."""
