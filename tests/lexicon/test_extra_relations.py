"""User TSV files of extra relations (lexicon/README.md) merged with WordNet: the shipped example
lexicon/extra_relations.tsv on a small stand-in WordNet, errors naming file:line, provenance."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dskd.config.loading import load_config
from dskd.core.errors import DSKDError
from dskd.core.io import sha256_file
from dskd.lexicon import Lexicon
from dskd.lexicon.build import build_lexicon, write_lexicon
from dskd.lexicon.config import LexiconConfig, LexiconSourceConfig
from dskd.lexicon.sources import SYN, load_source
from dskd.resources import resource

from .conftest import FIXTURES, make_word_tokenizer

EXAMPLE = resource("lexicon", "extra_relations.tsv")
WORDS = "big large huge small little smart clever online offline buyer seller unhappy happy sad".split()


class _Lemma:
    def __init__(self, name: str, synset: _Synset):
        self._name, self._synset = name, synset
        self.ants: list[_Lemma] = []

    def name(self) -> str:
        return self._name

    def synset(self) -> _Synset:
        return self._synset

    def antonyms(self) -> list[_Lemma]:
        return self.ants


class _Synset:
    def __init__(self, name: str, lemmas: list[str]):
        self._name, self._lemmas = name, [_Lemma(n, self) for n in lemmas]

    def name(self) -> str:
        return self._name

    def pos(self) -> str:
        return self._name.split(".")[1]

    def lemmas(self) -> list[_Lemma]:
        return self._lemmas


def small_wordnet():
    """A stand-in WordNet reader: {big, large} antonym of {small, little}, {happy}, {sad}."""
    big, small = _Synset("big.a.01", ["big", "large"]), _Synset("small.a.01", ["small", "little"])
    big.lemmas()[0].ants.append(small.lemmas()[0])
    synsets = [big, small, _Synset("happy.a.01", ["happy"]), _Synset("sad.a.01", ["sad"])]
    return SimpleNamespace(all_synsets=lambda: synsets)


def _keys(lex: Lexicon, tok, word: str) -> tuple[list[str], list[str]]:
    syn, ant = lex.neighbours(tok.convert_tokens_to_ids(word))
    return sorted(tok.convert_ids_to_tokens(syn.tolist())), sorted(tok.convert_ids_to_tokens(ant.tolist()))


def test_the_example_file_is_merged_with_wordnet_and_recorded(tmp_path):
    tok = make_word_tokenizer(WORDS)
    sources = "[{kind: wordnet}, {kind: tsv, path: " + str(EXAMPLE) + ", name: extra}]"
    cfg = load_config(
        FIXTURES.parents[2] / "experiments" / "tiny" / "base.yaml",
        [f"artifacts_dir={tmp_path / 'art'}", f"lexicon.sources={sources}"],
    )
    built = build_lexicon(cfg.lexicon, tok, "words", small_wordnet)
    lex = Lexicon.load(write_lexicon(cfg.lexicon, built, tok, "words", cfg.to_yaml()))
    # WordNet's relations and the file's, both directions; the file adds to a WordNet head (big ~ huge)
    assert _keys(lex, tok, "big") == (["huge", "large"], ["little", "small"])
    assert _keys(lex, tok, "huge") == (["big"], [])
    assert _keys(lex, tok, "smart") == (["clever"], []) and _keys(lex, tok, "clever") == (["smart"], [])
    assert _keys(lex, tok, "online") == ([], ["offline"]) and _keys(lex, tok, "offline") == ([], ["online"])
    assert _keys(lex, tok, "seller") == ([], ["buyer"])
    assert built.stats["pairs_per_source"]["extra"] == {
        "synonym_pairs": 4,  # big-huge, smart-clever, both directions (the rest are not one token)
        "antonym_pairs": 4,  # online-offline, buyer-seller
        "hypernym_pairs": 0,
    }
    extra = next(s for s in lex.meta["sources"] if s["name"] == "extra")
    assert extra == {
        "name": "extra",
        "kind": "tsv",
        "path": str(EXAMPLE),
        "sha256": sha256_file(EXAMPLE),
        "bit": 1,
    }
    assert lex.meta["provenance"]["inputs"]["extra"] == sha256_file(EXAMPLE)


def test_no_preset_reads_the_example_file():
    for folder in resource("presets").iterdir():
        for path in folder.glob("*.yaml"):
            assert "extra_relations" not in path.read_text(), path


def test_the_part_of_speech_column(tmp_path):
    path = tmp_path / "extra.tsv"
    path.write_text("# pos applies to both words\nunkind\tcruel\tsynonym\ta\nkind\tnice\tsyn\n")
    data = load_source(LexiconSourceConfig(kind="tsv", path=str(path)), LexiconConfig(), lambda: None)
    assert data.pairs == [("unkind", "cruel", SYN), ("kind", "nice", SYN)]
    assert data.words == {"unkind": {"a"}, "cruel": {"a"}, "kind": set(), "nice": set()}


@pytest.mark.parametrize(
    "line, what",
    [
        ("hot cold antonym", "expected 3 tab-separated fields (head, tail, relation) and an optional 4th"),
        ("hot cold antonym", "found 1 (the fields are separated by tabs, not spaces)"),
        ("hot\tcold\tantonym\ta\tx", "found 5"),
        ("hot\tcold\topposite", "unknown relation 'opposite' (use synonym, antonym or hypernym)"),
        ("hot\tcold\tantonym\tadj", "unknown part of speech 'adj' (use one of n v a s r)"),
        ("\tcold\tantonym", "empty head word"),
        ("hot\t \tantonym", "empty tail word"),
    ],
)
def test_a_malformed_line_names_file_line_and_what_was_expected(tmp_path, line, what):
    path = tmp_path / "extra.tsv"
    path.write_text(f"# header\nhot\tcold\tantonym\n\n{line}\n")
    with pytest.raises(DSKDError) as err:
        load_source(LexiconSourceConfig(kind="tsv", path=str(path)), LexiconConfig(), lambda: None)
    assert str(err.value).startswith(f"{path}:4: malformed line: ")
    assert what in str(err.value) and str(err.value).endswith("Fix or remove the line.")
