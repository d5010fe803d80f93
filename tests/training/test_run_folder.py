"""`dskd train` never writes into a run folder that holds something other than a dskd run."""

from __future__ import annotations

from pathlib import Path

import pytest

from dskd.config.loading import load_config
from dskd.core.errors import ConfigError, DSKDError
from dskd.training.run import run_dir, train

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "tiny" / "kd.yaml"


def test_a_foreign_run_folder_is_refused_before_anything_is_loaded(tmp_path):
    cfg = load_config(CONFIG, [f"runs_dir={tmp_path}"])
    folder = run_dir(cfg)
    folder.mkdir(parents=True)
    (folder / "data.csv").write_text("mine")
    with pytest.raises(DSKDError, match=r"seed-0 holds files not written by dskd; writing the run artifact"):
        train(cfg)
    assert [p.name for p in folder.iterdir()] == ["data.csv"]


def test_an_unsafe_name_never_becomes_a_folder(tmp_path):
    cfg = load_config(CONFIG, [f"runs_dir={tmp_path / 'runs'}", "name=../../escaped"])
    with pytest.raises(ConfigError, match="not a safe name"):
        run_dir(cfg)
    assert not (tmp_path / "runs").exists()
