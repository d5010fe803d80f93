"""A training logged to a file (as a SLURM job's ``.out`` or ``make reproduce > log``), read back whole: plain
lines, none of the known third-party messages, and ``[train]`` lines at the steps metrics.csv logs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dskd.training.run import run_dir

from .tinyrun import corpus_config, metrics_rows, write_corpus

ROOT = Path(__file__).resolve().parents[2]

NOISE = (
    "💡 Tip",  # Lightning's litlogger advertisement
    "LeafSpec",  # torch's deprecation of a check Lightning makes
    "`weights_only` was not set",  # a checkpoint save without weights_only
    "in eval mode at the start of training",  # the shared trunk's frozen teacher layers
    "Setting accelerator to CPU",  # DeepSpeed, imported by save_pretrained in the export
)


def test_a_training_logged_to_a_file_has_plain_lines_no_known_noise_and_logged_steps(tmp_path, teacher_dir):
    over = {"trainer.max_steps": 4, "trainer.log_every_n_steps": 2, "student.share_trunk": True}
    cfg = corpus_config(tmp_path, teacher_dir, write_corpus(tmp_path / "corpus.txt"), "kd", over)
    config = tmp_path / "run.yaml"
    config.write_text(cfg.to_yaml())
    log = tmp_path / "train.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    with open(log, "wb") as out:  # a file, not a terminal: the path of every batch job
        done = subprocess.run(
            [sys.executable, "-m", "dskd", "train", str(config)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=600,
        )
    text = log.read_bytes().decode()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text, text
    assert [n for n in NOISE if n in text] == [], text
    lines = re.findall(r"\[train\] step (\d+)/4 \(\d+%\) \| loss (\S+)", text)
    printed = {int(step): float(loss) for step, loss in lines}
    rows = metrics_rows(run_dir(cfg.runs_dir, cfg.name, cfg.seed))
    logged = {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    assert sorted(printed) == sorted(logged) == [2, 4]  # the line's step is the logged step
    for step, loss in printed.items():  # and the line's loss is the value logged at it
        assert float(f"{logged[step]:.4g}") == loss, (step, logged[step], loss)
    assert (run_dir(cfg.runs_dir, cfg.name, cfg.seed) / "export" / "config.json").is_file()  # it exported
