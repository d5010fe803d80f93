"""The `dskd` entry point: stages listed, user errors as one paragraph with exit status 2."""

from __future__ import annotations

import subprocess
import sys

from dskd.cli import STAGES, main

REQUIRED_STAGES = ["assets", "lexicon", "senses", "train", "export", "eval", "reproduce", "slurm"]


def test_help_lists_every_stage():
    out = subprocess.run(
        [sys.executable, "-m", "dskd", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for stage in REQUIRED_STAGES:
        assert stage in STAGES
        assert f"\n    {stage}" in out


def test_missing_config_is_a_one_paragraph_error(capsys, tmp_path):
    code = main(["train", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("dskd: error:") and "not found" in err
    assert "Traceback" not in err


def test_bad_override_is_reported_with_exit_2(capsys):
    code = main(["train", "experiments/tiny/dskd.yaml", "trainer.max_stepz=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Did you mean 'trainer.max_steps'" in err
