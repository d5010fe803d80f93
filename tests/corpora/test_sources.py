"""Document sources: text paragraphs, JSONL fields, offline corpora and bad input."""

from __future__ import annotations

import json
import logging

import pytest

from dskd.core.errors import DSKDError
from dskd.corpora.config import SOURCE_KINDS, SourceConfig
from dskd.corpora.sources import (
    _READERS,
    MAX_LINE_CHARS,
    SourceStats,
    hub_datasets,
    is_validation,
    iter_documents,
    random_subset,
    split_long,
)


def texts(sources, **kw):
    return [d.text for d in iter_documents(sources, **kw)]


def test_text_paragraphs_files_sorted_and_empty_lines_skipped(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.txt").write_text("one\ntwo\n\n\n  \nthree\n")
    stats = SourceStats()
    docs = list(iter_documents([SourceConfig(kind="text", path=str(tmp_path / "*.txt"))], stats=stats))
    assert [d.text for d in docs] == ["one\ntwo", "three", "second file"]
    assert docs[0].source == f"text:{tmp_path}/*.txt"
    assert stats.empty_lines == 3


def test_max_records(tmp_path):
    (tmp_path / "a.txt").write_text("a\n\nb\n\nc\n")
    assert texts([SourceConfig(kind="text", path=str(tmp_path / "a.txt"), max_records=2)]) == ["a", "b"]


def test_random_subset_is_seeded_in_order_and_uniform():
    items = list(range(20))
    a = list(random_subset(iter(items), 5, seed=3))
    assert a == list(random_subset(iter(items), 5, seed=3)) and a == sorted(a) and len(set(a)) == 5
    assert list(random_subset(iter(items), 30, seed=0)) == items  # fewer items than asked: all of them
    counts, pair_first, pair_last = [0] * 20, 0, 0
    for seed in range(4000):
        chosen = set(random_subset(iter(items), 5, seed=seed))
        for i in chosen:
            counts[i] += 1
        pair_first += {0, 1} <= chosen
        pair_last += {18, 19} <= chosen
    # each item in 5/20 of the subsets (sd 27), each pair in (5*4)/(20*19) of them (sd 14)
    assert all(abs(c - 1000) < 140 for c in counts), counts
    assert abs(pair_first - 210.5) < 70 and abs(pair_last - 210.5) < 70, (pair_first, pair_last)


def test_subset_seed_draws_max_records_from_the_whole_source(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"doc {i}" for i in range(100)) + "\n")
    src = SourceConfig(kind="text", path=str(tmp_path / "a.txt"), max_records=25, subset_seed=0)
    got = texts([src])
    assert len(got) == 25 and got != [f"doc {i}" for i in range(25)]
    assert got == sorted(got, key=lambda t: int(t.split()[1]))  # kept in source order
    assert max(int(t.split()[1]) for t in got) >= 50
    other = texts([SourceConfig(kind="text", path=src.path, max_records=25, subset_seed=1)])
    assert got == texts([src]) and other != got


def test_invalid_utf8_is_replaced_counted_and_warned_once(tmp_path, caplog):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 ok\n\nna\xefve \xff\n\nfine\n")
    stats = SourceStats()
    with caplog.at_level(logging.WARNING, logger="dskd.corpora.sources"):
        out = texts([SourceConfig(kind="text", path=str(tmp_path / "bad.txt"))], stats=stats)
    assert out == ["caf\ufffd ok", "na\ufffdve \ufffd", "fine"]
    assert stats.bad_utf8_lines == 2
    first = [r for r in caplog.records if "not UTF-8 replaced" in r.getMessage()]
    assert len(first) == 1 and "bad.txt:1" in first[0].getMessage()


def test_very_long_lines_are_split_at_spaces(tmp_path):
    words = " ".join(f"w{i:05d}" for i in range(MAX_LINE_CHARS // 3))
    (tmp_path / "long.txt").write_text(words + "\n")
    stats = SourceStats()
    out = texts([SourceConfig(kind="text", path=str(tmp_path / "long.txt"))], stats=stats)
    assert len(out) == 3 and stats.split_lines == 1  # 46,662 chars -> pieces of <= 20,000
    assert all(len(t) <= MAX_LINE_CHARS for t in out)
    assert " ".join(out).split() == words.split()  # nothing lost, no word cut


def test_split_long_without_spaces():
    assert split_long("x" * 25, limit=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_missing_files_name_the_pattern(tmp_path):
    with pytest.raises(DSKDError, match="nothere"):
        list(iter_documents([SourceConfig(kind="text", path=str(tmp_path / "nothere*.txt"))]))


def test_a_folder_as_the_path_says_it_is_a_folder_with_a_glob_to_use(tmp_path):
    with pytest.raises(
        DSKDError
    ) as e:  # before: "Data source file(s) '<dir>' not found" for a folder that exists
        list(iter_documents([SourceConfig(kind="text", path=str(tmp_path))]))
    assert str(e.value).startswith(f"Data source path '{tmp_path}' is a folder; give a file or a glob")
    assert str(e.value).endswith(f"e.g. '{tmp_path}/*.txt'.")


def test_jsonl_field_and_errors_name_file_and_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"body": "hello"}) + "\n\n" + json.dumps({"body": "world"}) + "\n")
    assert texts([SourceConfig(kind="jsonl", path=str(f), field="body")]) == ["hello", "world"]
    f.write_text(json.dumps({"body": "hello"}) + "\n" + json.dumps({"text": "x"}) + "\n")
    with pytest.raises(DSKDError, match=r"d\.jsonl:2: record has no text field 'body'"):
        list(iter_documents([SourceConfig(kind="jsonl", path=str(f), field="body")]))
    f.write_text("{not json\n")
    with pytest.raises(DSKDError, match=r"d\.jsonl:1 is not valid JSON"):
        list(iter_documents([SourceConfig(kind="jsonl", path=str(f))]))


def test_every_configurable_kind_has_a_reader():
    assert set(_READERS) == set(SOURCE_KINDS)


def test_hf_offline():
    with pytest.raises(DSKDError, match="datasets|hub"):
        list(iter_documents([SourceConfig(kind="hf", path="wikitext")]))


def test_validation_holdout_is_deterministic_and_about_the_fraction():
    held = [is_validation(f"document number {i}", 0.1) for i in range(5000)]
    assert held == [is_validation(f"document number {i}", 0.1) for i in range(5000)]
    assert 400 < sum(held) < 600
    assert not any(is_validation(f"document number {i}", 0.0) for i in range(100))


@pytest.mark.integration
def test_wordnet_corpus_examples_carry_synset_and_lemma_span():
    docs = list(iter_documents([SourceConfig(kind="wordnet_corpus", path="examples", max_records=2000)]))
    assert len(docs) == 2000
    spans = [d for d in docs if "span" in d.meta]
    assert len(spans) > 1500
    for d in spans:
        start, end = d.meta["span"]
        lemma = d.meta["lemma"].replace("_", " ").lower()
        assert d.text[start:end].lower().startswith(lemma[:3]), (d.text, d.meta)
        assert d.meta["synset"].count(".") >= 2


@pytest.mark.integration
def test_shakespeare_paragraphs():
    docs = list(iter_documents([SourceConfig(kind="shakespeare", max_records=200)]))
    assert len(docs) == 200 and all(d.text.strip() and "\n\n" not in d.text for d in docs)


def test_hub_datasets_names_each_hub_data_set_once_in_order():
    sources = [
        SourceConfig(kind="hf", path="wikimedia/wikipedia", subset="20231101.en"),
        SourceConfig(kind="arc_challenge", max_records=280),
        SourceConfig(kind="wordnet_corpus"),
        SourceConfig(kind="squad_v2", path="me/my_squad"),
        SourceConfig(kind="arc_challenge"),
        SourceConfig(kind="text", path="corpus/*.txt"),
    ]
    assert hub_datasets(sources) == ["wikimedia/wikipedia", "allenai/ai2_arc", "me/my_squad"]
