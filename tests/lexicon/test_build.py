"""Building, writing and loading a lexicon on fixture sources with a real word-level tokenizer.

Token ids are known by construction: id(word) = 1 + WORDS.index(word); VIDs start at len(tokenizer).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from dskd.cli import main
from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.lexicon import Lexicon
from dskd.lexicon.build import build_lexicon
from dskd.lexicon.config import LexiconConfig, LexiconSourceConfig

from .conftest import FIXTURES, WORDS, make_word_tokenizer

REPO = FIXTURES.parents[2]


def tid(word: str) -> int:
    return 1 + WORDS.index(word)


def no_wordnet():
    raise AssertionError("these tests do not use WordNet")


def _cfg(tmp_path, extra_tsv: str = "", **kw) -> LexiconConfig:
    sources = [
        LexiconSourceConfig(kind="wiktionary", path=str(FIXTURES / "wiktionary.jsonl")),
        LexiconSourceConfig(kind="dict2vec", path=str(FIXTURES / "dict2vec.txt")),
        LexiconSourceConfig(kind="tsv", path=str(FIXTURES / "pairs.tsv")),
    ]
    if extra_tsv:
        (tmp_path / "extra.tsv").write_text(extra_tsv)
        sources.append(LexiconSourceConfig(kind="tsv", path=str(tmp_path / "extra.tsv"), name="extra"))
    return LexiconConfig(sources=sources, **kw)


def _rows(csr, head: int) -> list[int]:
    return csr.indices[csr.indptr[head] : csr.indptr[head + 1]].tolist()


EXTRA = "good\tfine\tsynonym\nok\tfine\tsynonym\ngood\tzzz\tsynonym\ngelato\tdessert\thypernym\n"


def test_heads_neighbours_vids_and_polarity(tmp_path, word_tokenizer):
    built = build_lexicon(_cfg(tmp_path, EXTRA), word_tokenizer, "words", no_wordnet)
    m = built.mapped
    v = len(word_tokenizer)
    assert m.vocab_size == v == 26
    assert m.vid_tokens == [(tid("ice"), tid("cream"))]  # the only multi-token neighbour
    assert _rows(m.syn, tid("gelato")) == [v]  # its VID
    assert _rows(m.syn, tid("quick")) == sorted([tid("fast"), tid("rapid"), tid("speedy")])
    assert _rows(m.ant, tid("quick")) == [tid("slow")]
    assert _rows(m.ant, tid("fast")) == [tid("slow")]  # symmetric
    assert _rows(m.syn, tid("fast")) == [tid("quick")]
    assert _rows(m.ant, tid("hot")) == [tid("cold")] and _rows(m.ant, tid("cold")) == [tid("hot")]
    # polarity: unhappy ~ sad keeps the synonym pair and adds happy vs sad
    assert _rows(m.syn, tid("unhappy")) == [tid("sad")]
    assert _rows(m.ant, tid("happy")) == [tid("sad")] and _rows(m.ant, tid("sad")) == [tid("happy")]
    # "ok" (2 characters) is a neighbour but not a head; "zzz" is an unknown token: neither
    assert tid("ok") in _rows(m.syn, tid("fine")) and _rows(m.syn, tid("ok")) == []
    assert _rows(m.syn, tid("good")) == [tid("fine")]
    assert _rows(m.hyp, tid("gelato")) == [tid("dessert")]
    assert built.stats["vids"] == 1 and built.stats["antonym_pairs"] == m.ant.indices.size
    # provenance: happy/sad came from the TSV (bit 2) through the polarity rule (bit 4)
    i = m.ant.indptr[tid("happy")]
    assert m.ant.sources[i] == (1 << 2) | (1 << 4)
    assert built.stats["pairs_per_source"]["wiktionary:wiktionary.jsonl"]["antonym_pairs"] == 4
    assert [s["name"] for s in built.sources][-1] == "negation_polarity"


def test_single_token_switch_removes_exactly_single_token_neighbours(tmp_path, word_tokenizer):
    on = build_lexicon(_cfg(tmp_path, EXTRA), word_tokenizer, "words", no_wordnet).mapped
    off = build_lexicon(
        _cfg(tmp_path, EXTRA, single_token_neighbours=False), word_tokenizer, "words", no_wordnet
    )
    v = on.vocab_size

    def entries(csr):
        return {(h, k) for h in range(v) for k in _rows(csr, h)}

    assert entries(off.mapped.syn) == {(h, k) for h, k in entries(on.syn) if k >= v} == {(tid("gelato"), v)}
    assert entries(off.mapped.ant) == set()


def test_case_variants(tmp_path, word_tokenizer):
    m = build_lexicon(_cfg(tmp_path, EXTRA, case_variants=True), word_tokenizer, "words", no_wordnet).mapped
    assert _rows(m.syn, tid("Good")) == _rows(m.syn, tid("good")) == [tid("fine")]
    assert _rows(m.syn, tid("Big")) == _rows(m.syn, tid("big")) == [tid("large")]
    plain = build_lexicon(_cfg(tmp_path, EXTRA), word_tokenizer, "words", no_wordnet).mapped
    assert _rows(plain.syn, tid("Good")) == []


def test_max_neighbour_tokens(tmp_path, word_tokenizer):
    m = build_lexicon(_cfg(tmp_path, max_neighbour_tokens=1), word_tokenizer, "words", no_wordnet).mapped
    assert m.vid_tokens == [] and _rows(m.syn, tid("gelato")) == []


def test_empty_result_is_an_error(tmp_path, word_tokenizer):
    (tmp_path / "p.tsv").write_text("zzz\tyyy\tsynonym\nok\tgood\tantonym\n")  # unknown tokens; 2-char head
    cfg = LexiconConfig(
        sources=[LexiconSourceConfig(kind="tsv", path=str(tmp_path / "p.tsv"))], single_token_neighbours=False
    )
    with pytest.raises(DSKDError, match="lexicon is empty"):
        build_lexicon(cfg, word_tokenizer, "words", no_wordnet)


def _write_config(tmp_path, tokenizer_dir) -> str:
    cfg = {
        "base": str(REPO / "experiments" / "tiny" / "base.yaml"),
        "artifacts_dir": str(tmp_path / "art"),
        "lexicon": {
            "tokenizer": str(tokenizer_dir),
            "sources": [
                {"kind": "tsv", "path": str(FIXTURES / "pairs.tsv")},
                {"kind": "wiktionary", "path": str(FIXTURES / "wiktionary.jsonl")},
                {"kind": "dict2vec", "path": str(FIXTURES / "dict2vec.txt")},
            ],
        },
    }
    path = tmp_path / "lex.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_cli_build_writes_artifact_and_loads(tmp_path, word_tokenizer, capsys):
    tok_dir = tmp_path / "tok"
    word_tokenizer.save_pretrained(tok_dir)
    assert main(["lexicon", "build", _write_config(tmp_path, tok_dir)]) == 0
    out = tmp_path / "art" / "lexicon"
    assert {p.name for p in out.iterdir()} >= {
        "lexicon.safetensors",
        "meta.json",
        "stats.json",
        "config.yaml",
        "vids.json",
        "synsets.json",
    }
    lex = Lexicon.load(out)
    assert lex.meta["tokenizer"]["vocab_size"] == 26 and lex.tokenizer_name == str(tok_dir)
    assert [s["kind"] for s in lex.meta["sources"]] == ["tsv", "wiktionary", "dict2vec", "rule"]
    assert all(len(s["sha256"]) == 64 for s in lex.meta["sources"])
    assert lex.meta["provenance"]["stage"] == "lexicon"
    syn, ant = lex.neighbours(tid("quick"))
    assert syn.tolist() == sorted([tid("fast"), tid("rapid"), tid("speedy")])
    assert ant.tolist() == [tid("slow")]
    syn, ant = lex.neighbours(tid("happy"))
    assert syn.tolist() == [tid("glad")] and ant.tolist() == [tid("sad")]
    assert lex.neighbours(10_000)[0].size == 0  # outside the vocabulary
    assert lex.vid_tokens == {26: (tid("ice"), tid("cream"))} and lex.vid_words == {26: "ice cream"}
    assert lex.syn_indptr.shape == (27,) and lex.syn_indices.dtype == np.int64
    assert lex.synset_keys("good.a.01")[0].size == 0  # no WordNet source: empty synset table
    lex.check_tokenizer(word_tokenizer)
    with pytest.raises(ArtifactMismatchError, match="built for tokenizer"):
        lex.check_tokenizer(make_word_tokenizer(WORDS[::-1]))
    assert '"heads_with_synonyms"' in capsys.readouterr().out


def test_cli_bad_tokenizer_and_missing_artifact(tmp_path, capsys):
    assert main(["lexicon", "build", _write_config(tmp_path, tmp_path / "no-such-tokenizer")]) == 2
    assert "no-such-tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "art" / "lexicon").exists()
    with pytest.raises(DSKDError, match="dskd lexicon build"):
        Lexicon.load(tmp_path / "art" / "lexicon")


def test_cli_build_never_replaces_a_foreign_folder_unless_asked(tmp_path, word_tokenizer, capsys):
    tok_dir = tmp_path / "tok"
    word_tokenizer.save_pretrained(tok_dir)
    config = _write_config(tmp_path, tok_dir)
    out = tmp_path / "art" / "lexicon"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    assert main(["lexicon", "build", config]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds files not written by dskd" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main(["lexicon", "build", config, "--overwrite"]) == 0
    assert not (out / "notes.txt").exists() and Lexicon.load(out).vocab_size == 26
    assert main(["lexicon", "build", config]) == 0  # an earlier lexicon is replaced without asking


def test_damaged_lexicon_is_a_one_line_error(tmp_path, word_tokenizer, monkeypatch):
    import json

    tok_dir = tmp_path / "tok"
    word_tokenizer.save_pretrained(tok_dir)
    assert main(["lexicon", "build", _write_config(tmp_path, tok_dir)]) == 0
    out = tmp_path / "art" / "lexicon"
    meta_text = (out / "meta.json").read_text()
    assert set(json.loads(meta_text)["files"]) == {"lexicon.safetensors", "synsets.json", "vids.json"}
    (out / "meta.json").write_text(meta_text[:50])
    with pytest.raises(DSKDError, match=r"meta.json \(JSONDecodeError.*dskd lexicon build") as err:
        Lexicon.load(out)
    assert "\n" not in str(err.value)
    meta = json.loads(meta_text)
    del meta["tokenizer"]["fingerprint"]
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DSKDError, match="lacks the tokenizer's name, vocab_size or fingerprint"):
        Lexicon.load(out)
    (out / "meta.json").write_text(meta_text)
    vids = out / "vids.json"
    vids.write_text(vids.read_text().replace("ice cream", "ice crean"))  # same size, other bytes
    Lexicon.load(out)  # the default check compares sizes only
    monkeypatch.setenv("DSKD_VERIFY", "full")
    with pytest.raises(DSKDError, match="vids.json does not match the sha256"):
        Lexicon.load(out)
    arrays = out / "lexicon.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:-16])
    with pytest.raises(DSKDError, match="lexicon.safetensors has .* bytes, its metadata records"):
        Lexicon.load(out)
