"""The packaged resources: the same files as the repository's experiments/, all of them in the wheel."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from dskd.core.errors import DSKDError
from dskd.resources import resource

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
PACKAGED = resource()


def presets(root: Path) -> dict[str, Path]:
    return {p.name: p for p in root.iterdir() if (p / "kd.yaml").is_file() and (p / "dskd.yaml").is_file()}


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_experiments_and_the_packaged_presets_hold_the_same_files():
    assert presets(EXPERIMENTS).keys() == presets(resource("presets")).keys()
    for name, folder in presets(EXPERIMENTS).items():
        packaged = resource("presets", name)
        assert files(folder) == files(packaged), (
            f"experiments/{name}/ and dskd/resources/presets/{name}/ differ: copy the edited one over "
            f"the other (cp experiments/{name}/*.yaml dskd/resources/presets/{name}/)"
        )
    template = resource("slurm", "train.sbatch").read_bytes()
    assert (EXPERIMENTS / "slurm" / "train.sbatch").read_bytes() == template, (
        "experiments/slurm/train.sbatch and dskd/resources/slurm/train.sbatch differ: copy the edited one "
        "over the other"
    )


def _shipped(cfg: configparser.ConfigParser, package: str, folder: Path) -> set[Path]:
    return {p for g in cfg["options.package_data"][package].split(",") for p in folder.glob(g.strip())}


def test_every_resource_is_named_in_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    needed = {p for p in PACKAGED.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".sbatch")}
    assert len(needed) >= 4 * 3 + 1  # 4 presets of kd, dskd and base, the template
    missing = needed - _shipped(cfg, "dskd.resources", PACKAGED)
    assert not missing, f"not in setup.cfg's package_data: {sorted(map(str, missing))}"


def test_the_lexicon_folder_is_mapped_into_the_package():
    """The top-level lexicon/ ships as dskd/resources/lexicon/ (setup.cfg's package_dir, setup.py's
    packages); in a checkout resource("lexicon", ...) reads the folder itself."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["options"]["package_dir"].split() == ["dskd.resources.lexicon", "=", "lexicon"]
    assert '"dskd.resources.lexicon"' in (ROOT / "setup.py").read_text()
    lexicon = ROOT / "lexicon"
    every = {p for p in lexicon.rglob("*") if p.is_file()}
    assert {p.name for p in every} >= {"README.md", "negation_affixes.json", "extra_relations.tsv"}
    missing = every - _shipped(cfg, "dskd.resources.lexicon", lexicon)
    assert not missing, f"not in setup.cfg's package_data: {sorted(map(str, missing))}"
    assert resource("lexicon", "negation_affixes.json") == lexicon / "negation_affixes.json"
    assert not (PACKAGED / "lexicon").exists()  # a copy inside the checkout would shadow lexicon/


def test_a_missing_resource_is_a_clear_error():
    with pytest.raises(DSKDError, match="resource 'presets/nope' is not on disk"):
        resource("presets", "nope")


TRAIN_SET_SIZES = {"arc_challenge": 1119, "commonsense_qa": 9741, "piqa": 16113, "mmlu": 99842}
"""Records of the train splits the paper presets read (MMLU: auxiliary_train), from the data set cards."""


@pytest.mark.parametrize("preset", ["paper-llama3", "paper-mistral"])
def test_paper_presets_follow_the_recipe(preset):
    """docs/method.md §4 and its deviations (§4.1): fp32 master weights, one prompt per sequence, the
    teacher's continuation of 1 token (multiple choice) or 10 (SQuAD v2), seeded random 25% subsets
    trained on whole (no prompt held out for validation), sense-corpus caps of 50 (general text) and
    100 (task data) rows per key."""
    from dskd.config.loading import load_config

    for method in ("kd", "dskd"):
        cfg = load_config(resource("presets", preset, f"{method}.yaml"))
        assert cfg.trainer.precision == "bf16-mixed" and cfg.teacher.dtype == "bfloat16"
        assert (cfg.data.pack, cfg.data.batch_size, cfg.data.targets) == (False, 1, "teacher")
        assert (cfg.trainer.max_epochs, cfg.trainer.max_steps, cfg.optim.warmup_ratio) == (2, -1, 0.1)
        assert (cfg.data.val, cfg.data.val_fraction, cfg.trainer.limit_val_batches) == ([], 0.0, 0)
        train = {s.kind: s for s in cfg.data.train}
        assert set(train) == {*TRAIN_SET_SIZES, "squad_v2"}
        for kind, src in train.items():
            assert src.subset_seed is not None, f"{kind}: the first max_records records, not a random subset"
            new_tokens = src.teacher_new_tokens or cfg.data.teacher_new_tokens
            assert new_tokens == (10 if kind == "squad_v2" else 1)
            if kind in TRAIN_SET_SIZES:
                assert src.max_records == round(TRAIN_SET_SIZES[kind] / 4)
        general, *tasks = cfg.senses.sources
        assert (general.kind, general.reservoir_cap) == ("hf", 50)
        assert [(s.kind, s.max_records, s.subset_seed) for s in tasks] == [
            (s.kind, s.max_records, s.subset_seed) for s in cfg.data.train
        ], "the sense corpus holds the training prompts: the same subsets"
        assert all(s.reservoir_cap == 100 for s in tasks)
