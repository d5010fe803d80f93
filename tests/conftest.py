"""Shared fixtures: tiny random models for unit tests, the real assets for integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from types import SimpleNamespace

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

ASSET_FIXTURES = {"smollm2_dir", "smollm2_tokenizer", "wordnet", "wordnet_bpe"}
"""Fixtures that open a real asset: a test using one (directly or through another fixture) is
``integration``. A test that reaches an asset another way carries ``@pytest.mark.integration``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tiers: ``integration`` (real assets) and ``slurm`` (the local cluster), from the fixtures a
    test uses, so `make test-fast` (``-m "not integration and not slurm"``) leaves out all of them."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & ASSET_FIXTURES:
            item.add_marker(pytest.mark.integration)
        if "slurm_cluster" in names:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session", autouse=True)
def _document_indexes(tmp_path_factory):
    """Keep the document indexes of the tests' files (dskd.corpora.shards) out of the real DSKD_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSKD_INDEX_DIR", str(tmp_path_factory.mktemp("doc-index")))
        yield


@pytest.fixture
def tiny_llama_config():
    """A Llama config small enough for unit tests (random weights, any vocab size)."""
    from transformers import LlamaConfig

    def make(vocab_size: int = 128, hidden_size: int = 32, num_layers: int = 4, **kw) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **kw,
        )

    return make


@pytest.fixture(scope="session")
def smollm2_dir():
    """Folder of the real SmolLM2-135M-Instruct teacher (fetched into DSKD_HOME on first use)."""
    from dskd.assets import asset_path

    return asset_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def trl_gold():
    """TRL's GOLD pieces (``ULDLoss``, ``GOLDConfig``, ``encode_with_byte_offsets``), the reference of
    the cross-tokenizer tests; only a run outside CI without trl installed may skip (CI installs the dev
    extra)."""
    try:
        from trl.experimental.gold import GOLDConfig
        from trl.experimental.gold.gold_trainer import ULDLoss
        from trl.experimental.utils import encode_with_byte_offsets
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("trl is not installed (pip install -e .[dev])")
    return SimpleNamespace(
        ULDLoss=ULDLoss, GOLDConfig=GOLDConfig, encode_with_byte_offsets=encode_with_byte_offsets
    )


@pytest.fixture(scope="session")
def wordnet_bpe():
    """The project's second tokenizer: the 8k byte-level BPE trained on the wordnet-corpus asset
    (trained into DSKD_HOME on first use, a few seconds)."""
    from dskd.data.bpe import bpe_tokenizer

    return bpe_tokenizer()


@pytest.fixture(scope="session")
def wordnet():
    """The real WordNet 3.0 corpus reader (fetched into DSKD_HOME on first use)."""
    from dskd.assets import wordnet

    return wordnet()


@pytest.fixture
def home_without(tmp_path, monkeypatch):
    """``home_without(name, *needed)``: switch DSKD_HOME to a private home that links every asset of the
    current home except ``name`` (``needed`` are fetched there first) and point pip at an index that
    refuses connections, so ``name`` truly cannot be had and its fetch fails at once."""
    from dskd.assets import ASSETS, asset_path, asset_status, assets_root

    def switch(name: str, *needed: str):
        for other in needed:
            asset_path(other)
        real, home = assets_root(), tmp_path / "dskd-home"
        (home / "assets").mkdir(parents=True)
        for other in ASSETS:
            if other != name and asset_status(other)[0] == "present":
                (home / "assets" / other).symlink_to(real / other)
        monkeypatch.setenv("DSKD_HOME", str(home))
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "DSKD_DOWNLOADS"):
            monkeypatch.delenv(var, raising=False)
        return home

    return switch


@pytest.fixture(autouse=True)
def _restore_lightning_rank():
    """A Trainer built under a simulated cluster environment (e.g. SLURM_PROCID=3) sets Lightning's
    process-global rank; restore it so later tests in this process still act as rank 0."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    rank = getattr(rank_zero_only, "rank", 0)
    yield
    rank_zero_only.rank = rank


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root); CI=true turns a missing mount into a failure, not a skip."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    ok = (
        shutil.which("mount")
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        == 0
    )
    if not ok:
        message = "cannot mount a tmpfs (needs root) for the full-disk tests"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)
