"""`dskd reproduce --rehearse`: both paper presets as written, 2 DDP processes on a CPU, seen from outside.

Each rehearsal is started as a user would (Lightning launches the second process, which runs the
pipeline too). The expected learning rates are computed here from the number of optimizer steps the
run took (counted independently in each rank's example log), the preset's peak lr x world size and
its warm-up ratio.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dskd.core.stamps import STAMP
from dskd.evaluation.online import PAPER_TASKS
from dskd.launch.reproduce import preset_configs
from dskd.testing.fixtures import fresh_launch_env
from dskd.training.examples import read_example_ids

REPO = Path(__file__).resolve().parents[2]
WORLD = 2


def expected_lr(step: int, total: int, peak: float, warmup_ratio: float) -> float:
    """Linear warm-up over the first warmup_ratio of the steps, then a half cosine to 0 at ``total``."""
    warmup = round(warmup_ratio * total)
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def _lr_rows(run: Path) -> list[tuple[int, float]]:
    with open(run / "metrics.csv", newline="") as f:
        return [(int(r["step"]), float(r["train/lr"])) for r in csv.DictReader(f) if r.get("train/lr")]


def _check_run(cwd: Path, run: Path, cfg) -> None:
    # the ranks took disjoint examples, one batch per optimizer step, in every epoch
    ids = read_example_ids(run)
    assert sorted(ids) == list(range(WORLD))
    seen = [{i for _, _, i in ids[r]} for r in range(WORLD)]
    assert seen[0] and seen[1] and not seen[0] & seen[1], "two ranks trained on the same example"
    assert {e for e, _, _ in ids[0]} == set(range(cfg.trainer.max_epochs))
    steps = len(ids[0]) // cfg.data.batch_size
    assert len(ids[1]) == len(ids[0]) and [s for _, s, _ in ids[0]] == sorted(s for _, s, _ in ids[0])
    assert steps >= 20, "too few steps to see the schedule"
    # the logged lr: warm-up to the peak at 10% of the real steps, then cosine to about 0
    peak = cfg.optim.lr * WORLD
    rows = _lr_rows(run)
    assert [s for s, _ in rows] == list(range(1, steps + 1)), "one lr row per optimizer step, at its number"
    for step, lr in rows:  # row s: the lr of the s-th step, index s - 1 of the schedule
        assert lr == pytest.approx(
            expected_lr(step - 1, steps, peak, cfg.optim.warmup_ratio), rel=1e-5, abs=1e-12
        )
    top = max(range(steps), key=lambda s: rows[s][1])
    assert top == round(cfg.optim.warmup_ratio * steps) and rows[top][1] == pytest.approx(peak, rel=1e-5)
    assert rows[-1][1] < 0.01 * peak
    # exactly one on-policy batch (the rehearsal's data.on_policy.fraction): it trained, without CE
    with open(run / "metrics.csv", newline="") as f:
        flags = [r for r in csv.DictReader(f) if r.get("train/on_policy")]
    on = [r for r in flags if float(r["train/on_policy"]) == 1.0]
    assert len(flags) == steps and len(on) == 1
    assert math.isnan(float(on[0]["train/ce"])) and math.isfinite(float(on[0]["train/kd"]))
    assert float(on[0]["train/gen_tokens"]) > 0
    # exactly one export: the first process's
    export = json.loads((run / STAMP).read_text())["result"]["export_dir"]
    assert (cwd / export).resolve() == (run / "export").resolve()
    assert (run / "export" / "model.safetensors").is_file()
    assert sorted(p.name for p in run.glob("export*")) == ["export"]


@pytest.mark.integration  # the lexicon reads the WordNet asset, as the presets say
@pytest.mark.parametrize("preset", ["paper-llama3", "paper-mistral"])
def test_rehearsal_of_a_paper_preset_with_two_processes(tmp_path, preset):
    cmd = [sys.executable, "-m", "dskd", "reproduce", "--preset", preset, "--rehearse"]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=fresh_launch_env(REPO), capture_output=True, text=True, timeout=900
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-4000:]
    # the overrides are printed first
    head = out[: out.index("=== lexicon")]
    assert f"=== rehearsal of {preset}: the preset as written, except" in head
    for override in (
        "teacher.model=",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "DSKD_HUB_MIRROR=",
        "data.on_policy.fraction=",
    ):
        assert override in head
    # one writer per single-writer stage; both processes train and evaluate; no stamp written twice or torn
    for stage in ("rehearsal stand-ins", "lexicon", "senses", "teacher continuations (seeds [0])"):
        assert out.count(f"=== {stage}: running") == 1, stage
    assert out.count("=== eval: running") == WORLD  # the models dealt to the processes of the runs
    root = tmp_path / "artifacts/rehearse" / preset
    kd, dskd = preset_configs(preset, [0], [])[:2]
    for cfg in (kd, dskd):
        assert out.count(f"=== train {cfg.name} seed 0: running") == WORLD
        _check_run(tmp_path, root / "runs" / cfg.name / "seed-0", cfg)
    for stamp in root.rglob(STAMP):
        assert json.loads(stamp.read_text())["key"]
    # the paper-protocol evaluation of the teacher and both students, with every paper task
    results = json.loads((root / "results/results.json").read_text())["results"]
    for model in ("teacher", "KD", "DSKD"):
        assert {r["benchmark"] for r in results if r["model"] == model} == {f"paper/{t}" for t in PAPER_TASKS}
    header = (root / "results/table.md").read_text().splitlines()[0]
    assert all(f"paper/{t}" in header for t in PAPER_TASKS)
