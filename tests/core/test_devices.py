"""Every process uses its own accelerator: no bare ``cuda`` device anywhere in the package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dskd
from dskd.core.devices import local_device, local_rank, numerics

PACKAGE = Path(dskd.__file__).resolve().parent
BARE_CUDA = [
    re.compile(r'torch\.device\(\s*"cuda"\s*\)'),  # GPU 0 in every process
    re.compile(r'\.to\(\s*"cuda'),
    re.compile(r'"cuda"\s+if\b'),
    re.compile(r"\.cuda\(\s*\)"),
    re.compile(r"get_device_properties\(\s*0\s*\)"),
    re.compile(r'"cuda:0"'),
]


def bare_cuda_uses(root: Path) -> list[str]:
    """``file:line`` of every device expression in ``root`` that names no local rank."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "devices.py":
            continue
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(p.search(line) for p in BARE_CUDA):
                found.append(f"{path.relative_to(root.parent)}:{no}: {line.strip()}")
    return found


def test_the_package_names_no_device_without_a_local_rank():
    assert bare_cuda_uses(PACKAGE) == [], "use dskd.devices.local_device() (cuda:LOCAL_RANK)"


ISSUE_GREP = re.compile(r'device\("cuda"\)|"cuda"')
"""The check of the multi-GPU issue: `grep -rn 'device("cuda")\\|"cuda"' dskd`."""
NOT_A_DEVICE = [
    re.compile(r'torch\.device\(\s*"cuda"\s*,\s*\S'),  # an indexed device: cuda:<index>
    re.compile(r'\.type\s*[!=]=\s*"cuda"'),  # comparing a device's type
    re.compile(r'Literal\[[^]]*"cuda"'),  # a config choice (the dictionary resolves it to cuda:LOCAL_RANK)
    # reading a config key's choice from the config or its section (a load-time rule)
    re.compile(r'\b(?:cfg\.[\w.]*|senses\.)device\s*[!=]=\s*"cuda"'),
]


def unindexed_grep_hits(root: Path) -> list[str]:
    """The lines the issue's grep finds that are neither an indexed device, a device-type comparison
    nor a config choice."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ISSUE_GREP.search(line) and not any(p.search(line) for p in NOT_A_DEVICE):
                found.append(f"{path.relative_to(root.parent)}:{no}: {line.strip()}")
    return found


def test_the_issue_grep_finds_only_indexed_devices():
    assert unindexed_grep_hits(PACKAGE) == [], "use dskd.devices.local_device() (cuda:LOCAL_RANK)"


def test_the_issue_grep_rule_catches_unindexed_devices(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        'a = torch.device("cuda")\nb = x.to(device="cuda")\nc = {"device": "cuda"}\n'
        'ok = torch.device("cuda", 1)\nok = d.type == "cuda"\n'
    )
    assert [h.split(":")[1] for h in unindexed_grep_hits(tmp_path / "pkg")] == ["1", "2", "3"]


def test_the_scan_finds_bare_devices(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text('a = torch.device("cuda")\nb = x.to("cuda")\nc = x.cuda()\n')
    assert len(bare_cuda_uses(tmp_path / "pkg")) == 3


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),
        ({"LOCAL_RANK": "3"}, 3),
        ({"SLURM_LOCALID": "5"}, 5),
        ({"LOCAL_RANK": "1", "SLURM_LOCALID": "5"}, 1),
    ],
)
def test_local_rank_comes_from_the_launcher(monkeypatch, env, rank):
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert local_rank() == rank


def test_without_cuda_the_local_device_is_the_cpu():
    if torch.cuda.is_available():
        assert local_device() == torch.device("cuda", local_rank() % torch.cuda.device_count())
    else:
        assert local_device() == torch.device("cpu")


def test_a_device_key_resolves_to_this_process_device():
    from dskd.core.devices import resolve_device
    from dskd.core.errors import DSKDError

    assert resolve_device("cpu", "eval.device") == torch.device("cpu")
    assert resolve_device("auto", "eval.device") == local_device()
    if torch.cuda.is_available():
        assert resolve_device("cuda", "eval.device") == local_device() != torch.device("cuda")
    else:
        with pytest.raises(
            DSKDError, match=r"eval.device=cuda but no CUDA GPU is visible; use eval.device=auto"
        ):
            resolve_device("cuda", "eval.device")
    with pytest.raises(DSKDError, match="'tpu' is not a device"):
        resolve_device("tpu", "eval.device")


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WORLD_SIZE": "1"},
        {"SLURM_NTASKS": "8", "SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "job", "SLURM_PROCID": "0"},  # sbatch
        {"SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1", "SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "job"},
    ],
)
def test_one_process_joins_no_group(monkeypatch, env):
    """Outside torchrun and srun (or with one task), the stages run alone: no group, nothing to wait for."""
    import torch.distributed as dist

    from dskd.core.devices import launcher_group

    for name in ("WORLD_SIZE", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with launcher_group() as together:
        assert not together and not dist.is_initialized()


def test_a_gpu_accelerator_without_a_gpu_is_refused_naming_the_key(monkeypatch):
    from dskd.core.devices import check_accelerator
    from dskd.core.errors import DSKDError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DSKDError, match=r"^trainer.accelerator=gpu but no CUDA GPU is visible; use trainer"):
        check_accelerator("gpu")
    check_accelerator("cpu")
    check_accelerator("auto")  # Lightning picks the CPU


NUMERICS = "import json; from dskd.core.devices import numerics; print(json.dumps(numerics()))"


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="x86 only")
def test_numerics_names_the_kernel_path_and_threads_the_process_really_uses():
    """A process told to use AVX2 kernels and one thread says so; this one says what torch reports."""
    env = {
        **os.environ,
        "PYTHONPATH": str(PACKAGE.parent),
        "ATEN_CPU_CAPABILITY": "avx2",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", NUMERICS], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {
        "torch": torch.__version__,
        "cpu_capability": "AVX2",
        "threads": 1,
        "gpu": None,
    }
    here = numerics()
    assert (here["cpu_capability"], here["threads"]) == (
        torch.backends.cpu.get_cpu_capability(),
        torch.get_num_threads(),
    )
