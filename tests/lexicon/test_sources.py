"""Importers on small fixture files: pairs, words, provenance, and errors naming file:line."""

from __future__ import annotations

import pytest

from dskd.core.errors import DSKDError
from dskd.lexicon.config import LexiconConfig, LexiconSourceConfig
from dskd.lexicon.sources import ANT, HYP, SYN, load_source


def _load(kind: str, path, **kw):
    def no_wordnet():
        raise AssertionError("importers must not read WordNet")

    return load_source(LexiconSourceConfig(kind=kind, path=str(path), **kw), LexiconConfig(), no_wordnet)


def test_wiktionary(fixtures_dir):
    data = _load("wiktionary", fixtures_dir / "wiktionary.jsonl")
    assert sorted(data.pairs) == sorted(
        [
            ("quick", "fast", SYN),
            ("quick", "rapid", SYN),
            ("quick", "speedy", SYN),
            ("quick", "slow", ANT),
            ("slow", "fast", ANT),
            ("ice cream", "gelato", SYN),  # underscore -> space
        ]
    )
    assert "lonely" in data.words  # an entry without relations is still a known word
    assert data.name == "wiktionary:wiktionary.jsonl"
    assert len(data.sha256) == 64 and data.path.endswith("wiktionary.jsonl")


def test_dict2vec(fixtures_dir):
    data = _load("dict2vec", fixtures_dir / "dict2vec.txt")
    assert data.pairs == [("happy", "glad", SYN), ("big", "large", SYN)]
    data = _load("dict2vec", fixtures_dir / "dict2vec.txt", relation="antonym", name="d2v-ant")
    assert data.pairs[0] == ("happy", "glad", ANT) and data.name == "d2v-ant"


def test_tsv(fixtures_dir):
    data = _load("tsv", fixtures_dir / "pairs.tsv")
    assert data.pairs == [("unhappy", "sad", SYN), ("hot", "cold", ANT), ("ice cream", "dessert", HYP)]


@pytest.mark.parametrize(
    "kind, name, where, what",
    [
        ("wiktionary", "bad_wiktionary.jsonl", 2, 'string "word"'),
        ("wiktionary", "bad_json.jsonl", 2, "invalid JSON"),
        ("dict2vec", "bad_dict2vec.txt", 2, "expected two words"),
        ("tsv", "bad_relation.tsv", 2, "unknown relation 'opposite'"),
        ("tsv", "bad_fields.tsv", 2, "expected 3 tab-separated fields"),
        ("tsv", "not_utf8.tsv", 2, "not UTF-8"),
    ],
)
def test_malformed_lines_name_file_and_line(fixtures_dir, kind, name, where, what):
    with pytest.raises(DSKDError) as err:
        _load(kind, fixtures_dir / name)
    assert f"{fixtures_dir / name}:{where}:" in str(err.value)
    assert what in str(err.value)


def test_missing_or_unknown_source(tmp_path):
    with pytest.raises(DSKDError, match="does not exist"):
        _load("tsv", tmp_path / "nope.tsv")
    with pytest.raises(DSKDError, match="needs a `path`"):
        load_source(LexiconSourceConfig(kind="tsv"), LexiconConfig(), lambda: None)
    with pytest.raises(DSKDError, match="unknown relation 'meronym'"):
        (tmp_path / "p.txt").write_text("a b\n")
        _load("dict2vec", tmp_path / "p.txt", relation="meronym")


def test_unreadable_file(tmp_path):
    folder = tmp_path / "dir.tsv"
    folder.mkdir()
    with pytest.raises(DSKDError, match="does not exist"):
        _load("tsv", folder)


def test_missing_wordnet_data_says_how_to_fetch(tmp_path):
    from dskd.assets import open_wordnet

    (tmp_path / "corpora" / "wordnet").mkdir(parents=True)  # an NLTK root without the WordNet files
    with pytest.raises(DSKDError, match="dskd assets fetch wordnet"):
        load_source(LexiconSourceConfig(), LexiconConfig(), lambda: open_wordnet(tmp_path))
