"""`dskd train` never writes into a run folder that holds something other than a dskd run, and builds
the inputs it lacks by their own stages (one process) or names the command (several)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dskd.config.loading import load_config
from dskd.core.errors import ConfigError, DSKDError
from dskd.core.io import read_json
from dskd.core.stamps import STAMP
from dskd.training.run import run_dir, started_together, train

from .tinyrun import corpus_config, write_corpus

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "tiny" / "kd.yaml"


def test_a_foreign_run_folder_is_refused_before_anything_is_loaded(tmp_path):
    cfg = load_config(CONFIG, [f"runs_dir={tmp_path}"])
    folder = run_dir(cfg.runs_dir, cfg.name, cfg.seed)
    folder.mkdir(parents=True)
    (folder / "data.csv").write_text("mine")
    with pytest.raises(DSKDError, match=r"seed-0 holds files not written by dskd; writing the run artifact"):
        train(cfg)
    assert [p.name for p in folder.iterdir()] == ["data.csv"]


def test_an_unsafe_name_is_refused_when_the_config_loads_and_never_becomes_a_folder(tmp_path):
    with pytest.raises(
        ConfigError, match=r"overrides: The run name \(name\) '../../escaped' is not a safe name"
    ):
        load_config(CONFIG, [f"runs_dir={tmp_path / 'runs'}", "name=../../escaped"])  # before: only in train
    with pytest.raises(ConfigError, match="not a safe name"):
        run_dir(str(tmp_path / "runs"), "../../escaped", 0)
    assert not (tmp_path / "runs").exists()


def test_a_single_process_run_builds_its_continuations_and_several_processes_are_told_to(
    run_tmp, teacher_dir, capsys, monkeypatch
):
    corpus = write_corpus(run_tmp / "corpus.txt")
    over = {"data.targets": "teacher", "data.teacher_new_tokens": 2, "trainer.max_steps": 2}
    cfg = corpus_config(run_tmp, teacher_dir, corpus, "kd", over)
    with monkeypatch.context() as started_together:  # as srun starts 2 tasks
        started_together.setenv("SLURM_STEP_NUM_TASKS", "2")
        with pytest.raises(DSKDError, match=r"`dskd continuations build CONFIG \[key=value \.\.\.\]`"):
            train(cfg, export=False)
    folder = Path(cfg.data.continuations_dir)
    assert not folder.exists()
    out = train(cfg, export=False)
    printed = capsys.readouterr().out
    assert f"=== teacher continuations: running -> {folder}" in printed and (folder / STAMP).is_file()
    assert out["global_step"] == 2 and read_json(folder / "stats.json")["generated_files"] == 1
    train(cfg, export=False)  # a second run finds them: no stage
    assert "=== teacher continuations" not in capsys.readouterr().out


def test_only_processes_a_launcher_started_together_count_as_started_together(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    assert not started_together()
    monkeypatch.setenv("WORLD_SIZE", "2")  # what Lightning sets in the first process at fit
    assert not started_together()
    monkeypatch.setenv("RANK", "1")  # torchrun
    assert started_together()
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")  # srun
    assert started_together()
