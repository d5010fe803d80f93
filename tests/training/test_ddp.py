"""A real 2-process DDP run on CPU (gloo), started as a script the way a user would start one."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def test_two_process_ddp_run(tmp_path, teacher_dir):
    script = Path(__file__).with_name("ddp_script.py")
    # a fresh launch: no rendezvous, rank or cluster variables left by earlier tests of this process
    leaked = ("MASTER_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "PL_", "SLURM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaked)}
    env.update(PYTHONPATH=str(Path.cwd()), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(teacher_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "tiny-dskd" / "seed-0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 4
    w0, w1 = (torch.load(tmp_path / f"weights-rank{r}.pt") for r in (0, 1))
    assert torch.equal(w0, w1)  # the two processes saw different batches; gradients were averaged
    with open(run / "metrics.csv", newline="") as f:
        lrs = {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")}
    assert lrs[1] == pytest.approx(2 * 1e-3, rel=1e-6)  # lr x world size, after the one warm-up step
