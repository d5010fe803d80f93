"""The `dskd` entry point: stages listed, user errors as one paragraph with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dskd.cli import STAGES, build_parser, main, parse_args
from dskd.core.errors import ConfigError

REQUIRED_STAGES = [
    "config",
    "assets",
    "lexicon",
    "senses",
    "continuations",
    "cache",
    "train",
    "export",
    "eval",
    "reproduce",
    "slurm",
]


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


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "C.yaml", "--no-export", "seed=1"], ["seed=1"]),
        (["train", "C.yaml", "seed=1", "--no-export", "seed=2", "name=x"], ["seed=1", "seed=2", "name=x"]),
        (["train", "--no-export", "C.yaml", "seed=1"], ["seed=1"]),
        (["slurm", "submit", "C.yaml", "--nodes", "1", "method=kd", "--gpus-per-node", "1"], ["method=kd"]),
        (["senses", "build", "C.yaml", "--no-progress", "senses.k=3"], ["senses.k=3"]),
        (["reproduce", "seed=1", "--seeds", "2", "name=x"], ["seed=1", "name=x"]),
    ],
)
def test_overrides_may_follow_flags(argv, expected):
    assert parse_args(build_parser(), argv).overrides == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "C.yaml", "--no-export", "--bogus"],
        ["train", "C.yaml", "--no-export", "stray"],
        ["assets", "list", "seed=1"],  # a stage without overrides
    ],
)
def test_other_stray_words_are_still_refused(capsys, argv):
    with pytest.raises(SystemExit) as e:
        parse_args(build_parser(), argv)
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "required"), [(["train"], "config"), (["ablate"], "sweep")])
def test_a_missing_config_names_only_what_is_required(capsys, argv, required):
    with pytest.raises(SystemExit) as e:
        parse_args(build_parser(), argv)
    assert e.value.code == 2  # before: "required: config, key=value" (overrides are optional)
    assert capsys.readouterr().err.strip().endswith(f"the following arguments are required: {required}")
    assert parse_args(build_parser(), ["train", "C.yaml"]).overrides == []


def test_train_override_after_flag_reaches_the_config(capsys):
    code = main(["train", "experiments/tiny/dskd.yaml", "--no-export", "method=dksd"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'method'" in err and "kd, dskd" in err and "Did you mean 'dskd'?" in err


def test_slurm_dry_run_refuses_a_mistyped_method(capsys):
    argv = ["slurm", "submit", "experiments/tiny/dskd.yaml", "method=dksd", "--nodes", "1"]
    code = main([*argv, "--gpus-per-node", "1", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "'method'" in err and "not one of: kd, dskd" in err
    assert "#SBATCH" not in capsys.readouterr().out


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_reraises_with_the_cause(monkeypatch, tmp_path, how):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n", encoding="utf-8")
    if how == "env":
        monkeypatch.setenv("DSKD_DEBUG", "1")
    argv = ["--debug"] if how == "flag" else []
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        main([*argv, "train", str(bad)])
    assert isinstance(e.value.__cause__, yaml.YAMLError)


def test_without_debug_the_error_is_one_paragraph(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("DSKD_DEBUG", raising=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n", encoding="utf-8")
    assert main(["train", str(bad)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_train_on_gpu_without_one_is_one_line_before_any_model_loads_and_writes_nothing(tmp_path):
    """As eval.device=cuda: trainer.accelerator=gpu with no GPU visible stops at load, not at fit."""
    preset = Path(__file__).resolve().parents[1] / "experiments" / "smoke" / "kd.yaml"
    script = (
        "import sys\nfrom dskd.cli import main\n"
        f"rc = main(['train', {str(preset)!r}, 'trainer.accelerator=gpu'])\n"
        "loaded = sorted(m for m in ('transformers', 'lightning', 'dskd.training.run') if m in sys.modules)\n"
        "print(rc, loaded)\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine with one
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, check=True
    )
    assert out.stdout == "2 []\n"  # exit status 2; neither transformers nor Lightning was imported
    assert out.stderr == (
        "dskd: error: trainer.accelerator=gpu but no CUDA GPU is visible; "
        "use trainer.accelerator=auto or cpu.\n"
    )
    assert list(tmp_path.iterdir()) == []  # the preset's runs/ and artifacts/ are relative to the cwd


def test_config_prints_the_resolved_config_with_every_default(capsys):
    from dskd.config.loading import config_from_dict, load_config

    preset = "experiments/paper-llama3/dskd.yaml"
    assert main(["config", preset, "seed=2"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert config_from_dict(printed) == load_config(preset, ["seed=2"])  # the run it would start
    assert printed["seed"] == 2 and printed["teacher"]["model"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert "nan_policy" in printed["trainer"]  # a default the preset does not spell out


def test_usage_errors_name_what_is_missing_and_how_to_write_an_override(capsys):
    with pytest.raises(SystemExit):
        main(["train"])
    err = capsys.readouterr().err
    assert "the following arguments are required: config\n" in err  # not "config, key=value"
    with pytest.raises(SystemExit):
        main(["train", "C.yaml", "--optim.lr", "1e-4"])  # LightningCLI's habit
    assert "without dashes: optim.lr=1e-4)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "C.yaml", "--optim.lr=1e-4"])
    assert "without dashes: optim.lr=1e-4)" in capsys.readouterr().err
