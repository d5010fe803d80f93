"""The packaged resources: the same files as the repository's experiments/, all of them in the wheel."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from dskd.errors import DSKDError
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


def test_every_resource_is_named_in_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    globs = [g.strip() for g in cfg["options.package_data"]["dskd.resources"].split(",")]
    shipped = {p for g in globs for p in PACKAGED.glob(g)}
    needed = {p for p in PACKAGED.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".sbatch")}
    assert len(needed) >= 4 * 3 + 2  # 4 presets of kd, dskd and base, the template, the affixes
    assert needed <= shipped, f"not in setup.cfg's package_data: {sorted(map(str, needed - shipped))}"


def test_a_missing_resource_is_a_clear_error():
    with pytest.raises(DSKDError, match="resource 'presets/nope' is not on disk"):
        resource("presets", "nope")
