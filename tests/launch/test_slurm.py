"""`dskd slurm submit --dry-run`: the rendered sbatch script, checked line by line and by bash itself."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dskd.cli import main
from dskd.config.loading import load_config
from dskd.core.errors import ConfigError
from dskd.launch.slurm import TEMPLATE, render_template

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "tiny" / "kd.yaml"


def dry_run(capsys, monkeypatch, tmp_path, *args: str) -> str:
    monkeypatch.chdir(tmp_path)
    assert main(["slurm", "submit", str(CONFIG), *args, "--dry-run"]) == 0
    return capsys.readouterr().out


def sbatch_options(script: str) -> dict[str, str]:
    return dict(m.groups("") for m in re.finditer(r"^#SBATCH --([a-z-]+)(?:=(.*))?$", script, re.M))


def srun_argv(script: str) -> list[str]:
    (line,) = [line for line in script.splitlines() if line.startswith("srun ")]
    return shlex.split(line)


def test_two_nodes_of_eight_gpus(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    script = dry_run(
        capsys, monkeypatch, tmp_path, "seed=3", "--nodes", "2", "--gpus-per-node", "8",
        "--partition", "gpu", "--time", "1-00:00:00",
    )  # fmt: skip
    opts = sbatch_options(script)
    run = tmp_path / "runs" / "tiny" / "tiny-kd" / "seed-3"
    assert opts == {
        "job-name": "tiny-kd",
        "nodes": "2",
        "ntasks-per-node": "8",
        "gres": "gpu:8",
        "cpus-per-task": "1",  # the process and its data.num_workers (0) loader workers
        "mem": "0",  # a GPU job takes all of each node's memory unless --mem says otherwise
        "partition": "gpu",
        "time": "1-00:00:00",
        "signal": "USR1@90",
        "requeue": "",
        "open-mode": "append",
        "chdir": str(tmp_path),
        "output": f"{run}/slurm/%j.out",
    }
    argv = srun_argv(script)
    assert argv[:2] == ["srun", "--kill-on-bad-exit=1"]
    assert argv[2:6] == [sys.executable, "-m", "dskd", "train"]
    assert argv[6] == str(CONFIG)
    overrides = argv[7:]
    assert overrides[0] == "seed=3"
    cfg = load_config(CONFIG, overrides)  # the job's command line is a valid config
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.accelerator) == (2, "8", "gpu")
    assert cfg.trainer.resume == "auto" and cfg.seed == 3
    assert "export MASTER_PORT=$((15000 + SLURM_JOB_ID % 10000))" in script
    assert "\nexport WANDB_MODE=offline\n" in script  # logging.wandb on, no API key: offline, said so
    assert not (run / "slurm").exists(), "a dry run writes nothing"
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # bash parses it
    assert "\n##SBATCH --account=YOUR_ACCOUNT\n##SBATCH --exclusive\n" in script  # off until edited
    exports = [
        line for line in script.splitlines() if line.startswith(("export SRUN_", "export TORCH_NCCL_"))
    ]
    env = {"PATH": os.environ["PATH"], "SLURM_CPUS_PER_TASK": "6", "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": "900"}
    shown = subprocess.run(
        ["bash", "-c", "\n".join([*exports, "env"])], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert {"SRUN_CPUS_PER_TASK=6", "TORCH_NCCL_ASYNC_ERROR_HANDLING=1"} <= set(shown)  # srun 22.05-23.02
    assert "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC=900" in shown  # the user's own value wins


def test_cpu_job_leaves_unset_options_out(capsys, monkeypatch, tmp_path):
    script = dry_run(
        capsys, monkeypatch, tmp_path, "--nodes", "3", "--gpus-per-node", "0",
        "--tasks-per-node", "2", "--cpus-per-task", "4",
    )  # fmt: skip
    opts = sbatch_options(script)
    assert (opts["nodes"], opts["ntasks-per-node"], opts["cpus-per-task"]) == ("3", "2", "4")
    assert not {"gres", "partition", "time", "mem"} & set(opts)
    overrides = srun_argv(script)[7:]
    assert overrides == [
        "trainer.num_nodes=3",
        'trainer.devices="2"',
        "trainer.accelerator=cpu",
        "trainer.resume=auto",
    ]


@pytest.mark.parametrize(
    "overrides, flags, env, mode",
    [
        ([], [], {}, "offline"),
        ([], [], {"WANDB_API_KEY": "secret-key-1"}, "online"),
        ([], [], {"WANDB_API_KEY": "secret-key-1", "WANDB_MODE": "disabled"}, "disabled"),
        (["logging.wandb=false"], [], {"WANDB_MODE": "online"}, "disabled"),
        ([], ["--wandb-mode", "online"], {}, "online"),
    ],
)
def test_the_job_sets_wandb_mode_and_its_resources(
    capsys, monkeypatch, tmp_path, overrides, flags, env, mode
):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    script = dry_run(
        capsys, monkeypatch, tmp_path, *overrides, "data.num_workers=2",
        "--nodes", "1", "--gpus-per-node", "8", "--mem", "480G", *flags,
    )  # fmt: skip
    assert f"\nexport WANDB_MODE={mode}\n" in script and "secret-key" not in script  # never the key
    opts = sbatch_options(script)
    assert (opts["cpus-per-task"], opts["mem"]) == ("3", "480G")  # 2 loader workers + the process
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nodes", "1", "--gpus-per-node", "8", "--mem", "4 GB"], "not a memory size sbatch reads"),
        (["trainer.devices=4", "--nodes", "1", "--gpus-per-node", "8"], "set by the SLURM job itself"),
        (["trainer.resume=never", "--nodes", "1", "--gpus-per-node", "8"], "trainer.resume=auto"),
        (["--nodes", "1", "--gpus-per-node", "8", "--tasks-per-node", "2"], "one task per GPU"),
        (["--nodes", "0", "--gpus-per-node", "8"], "--nodes must be at least 1"),
        (["trainer.max_step=3", "--nodes", "1", "--gpus-per-node", "1"], "trainer.max_steps"),
    ],
)
def test_bad_requests_fail_before_submitting(capsys, monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["slurm", "submit", str(CONFIG), *args, "--dry-run"]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_submit_without_sbatch_says_what_to_do(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["slurm", "submit", str(CONFIG), "--nodes", "1", "--gpus-per-node", "1"]) == 2
    assert "--dry-run" in capsys.readouterr().err


def test_submit_marks_the_run_folder_it_logs_into_and_refuses_a_foreign_one(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: the folder rules come first
    run = tmp_path / "runs" / "tiny" / "tiny-kd" / "seed-0"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    assert main(["slurm", "submit", str(CONFIG), "--nodes", "1", "--gpus-per-node", "1"]) == 2
    assert "files not written by dskd" in capsys.readouterr().err and (run / "notes.txt").is_file()
    (run / "notes.txt").unlink()
    assert main(["slurm", "submit", str(CONFIG), "--nodes", "1", "--gpus-per-node", "1"]) == 2  # no sbatch
    from dskd.core.outputs import artifact_kind

    assert artifact_kind(run) == "run"  # the job's log folder inside it will not make it foreign


def test_template_lines_with_unset_values_are_dropped_and_typos_refused():
    text = "a={{ a }}\n#SBATCH --b={{b}}\nc\n"
    assert render_template(text, {"a": 1, "b": None}) == "a=1\nc\n"
    with pytest.raises(ConfigError, match=re.escape("'{{ nodez }}' is unknown")):
        render_template("#SBATCH --nodes={{ nodez }}\n", {"nodes": 2})


def test_custom_template(capsys, monkeypatch, tmp_path):
    custom = tmp_path / "mine.sbatch"
    custom.write_text(
        TEMPLATE.read_text().replace("set -euo pipefail", "set -euo pipefail\nmodule load cuda")
    )
    script = dry_run(
        capsys, monkeypatch, tmp_path, "--nodes", "1", "--gpus-per-node", "2", "--template", str(custom)
    )
    assert "module load cuda\n" in script and "#SBATCH --gres=gpu:2\n" in script


HOSTILE = "x$(touch pwned1)`touch pwned2`'q\"; touch pwned3 #"
"""Command substitution, backquotes, both quotes, a command separator and a comment."""


def run_with_stub_scheduler(script: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Execute ``script`` with bash; ``srun`` and ``scontrol`` are stubs (srun records its argv)."""
    stubs, cwd = tmp_path / "stubs", tmp_path / "cwd"
    stubs.mkdir()
    cwd.mkdir()
    (stubs / "srun").write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$SRUN_ARGV"\n')
    (stubs / "scontrol").write_text("#!/bin/bash\necho node1\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node1",
        "SRUN_ARGV": str(tmp_path / "srun.argv"),
    }
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True)
    argv = (tmp_path / "srun.argv").read_text().split("\0")[:-1] if done.returncode == 0 else []
    return done, argv


def test_hostile_values_render_a_script_that_runs_nothing_extra(tmp_path):
    from dskd.launch.slurm import JobSpec, render

    command = ["python", "-m", "dskd", "train", f"{tmp_path}/{HOSTILE}.yaml", f"name={HOSTILE}", "a=b c"]
    spec = JobSpec(
        job_name=HOSTILE, nodes=1, tasks_per_node=1, gpus_per_node=0, cpus_per_task=1, mem="2G",
        wandb_mode="offline", partition=HOSTILE, time=None, workdir=tmp_path / f"w{HOSTILE}",
        log_dir=tmp_path / HOSTILE / "slurm", command=command,
    )  # fmt: skip
    script = render(spec)
    done, argv = run_with_stub_scheduler(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("pwned*")), "the script ran a command hidden in a value"
    assert argv == ["--kill-on-bad-exit=1", *command]
    assert f"WANDB_MODE=offline, logs in {tmp_path / HOSTILE / 'slurm'}\n" in done.stdout
    opts = sbatch_options(script)  # sbatch reads double quotes and backslash escapes, as POSIX shlex does
    assert shlex.split(opts["job-name"]) == [HOSTILE] and shlex.split(opts["partition"]) == [HOSTILE]
    assert shlex.split(opts["chdir"]) == [str(spec.workdir)]


@pytest.mark.parametrize("field", ["job_name", "workdir", "command"])
def test_a_newline_in_any_value_is_refused(tmp_path, field):
    from dskd.launch.slurm import JobSpec, render

    values = {"job_name": "a", "workdir": tmp_path, "command": ["python", "-m", "dskd"]}
    values[field] = {
        "job_name": "a\ntouch pwned",
        "workdir": tmp_path / "a\nb",
        "command": ["x\ntouch pwned"],
    }[field]
    spec = JobSpec(
        nodes=1, tasks_per_node=1, gpus_per_node=0, cpus_per_task=1, mem=None, wandb_mode="offline",
        partition=None, time=None, log_dir=tmp_path, **values,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="control character"):
        render(spec)


def test_a_placeholder_inside_double_quotes_is_refused():
    with pytest.raises(ConfigError, match=r"line 2: placeholder '\{\{ log_dir \}\}' is inside double quotes"):
        render_template('#!/bin/bash\necho "logs in {{ log_dir }}"\n', {"log_dir": "/x"})


@pytest.mark.parametrize(
    "args",
    [
        [f"name={HOSTILE}"],
        ["name=../.."],
        ["name=a\ntouch pwned"],
        ["--job-name", "a b"],
    ],
    ids=["substitution", "dotdot", "newline", "job-name"],
)
def test_unsafe_names_are_refused_before_rendering(capsys, monkeypatch, tmp_path, args):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["slurm", "submit", str(CONFIG), *args, "--nodes", "1", "--gpus-per-node", "1", "--dry-run"])
        == 2
    )
    err = capsys.readouterr().err
    assert "not a safe name" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_hostile_run_folder_end_to_end(capsys, monkeypatch, tmp_path):
    """`dskd slurm submit --dry-run` with a hostile runs_dir; its script, run by bash, runs only srun."""
    runs = tmp_path / f"r{HOSTILE.removesuffix(' #')}"  # ' #' would start a YAML comment in the override
    script = dry_run(
        capsys, monkeypatch, tmp_path, f"runs_dir={runs}", "--nodes", "1", "--gpus-per-node", "0"
    )
    done, argv = run_with_stub_scheduler(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("pwned*"))
    assert argv[1:5] == [sys.executable, "-m", "dskd", "train"] and f"runs_dir={runs}" in argv
    assert f"logs in {runs}/tiny-kd/seed-0/slurm\n" in done.stdout
