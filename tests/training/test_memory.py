"""`dskd memory`: the per-GPU estimate against hand computations, real parameter counts and the docs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dskd.cli import main
from dskd.config.loading import load_config
from dskd.config.schema import ExperimentConfig
from dskd.training.memory import KNOWN_SHAPES, MemoryInputs, ModelShape, estimate, render, startup_peak

ROOT = Path(__file__).resolve().parents[2]
LLAMA = "meta-llama/Meta-Llama-3-8B-Instruct"


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_counts_equal_a_real_model_and_its_truncated_student(tied):
    from transformers import LlamaForCausalLM

    from dskd.models.student import truncate
    from dskd.testing.fixtures import llama_config

    config = llama_config(vocab=50, hidden=32, layers=4, heads=4, kv_heads=2)
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(config)
    shape = ModelShape.from_hf_config(config)
    assert shape.params() == sum(p.numel() for p in teacher.parameters())
    student = truncate(teacher, 3, 1)
    assert shape.params(3) == sum(p.numel() for p in student.parameters())
    assert shape.layer_params == sum(p.numel() for p in student.parameters() if p.requires_grad)


def _inputs(cfg: ExperimentConfig) -> MemoryInputs:
    """The sections of ``cfg`` that the estimate reads."""
    return MemoryInputs(
        cfg.name, cfg.method, cfg.teacher, cfg.student, cfg.trainer, cfg.data, cfg.loss, cfg.senses
    )


def test_the_paper_teachers_have_their_published_sizes():
    assert KNOWN_SHAPES[LLAMA].params() == 8_030_261_248
    assert KNOWN_SHAPES["mistralai/Mistral-7B-Instruct-v0.1"].params() == 7_241_732_096


def test_paper_llama3_on_eight_gpus_by_hand():
    cfg = _inputs(load_config(ROOT / "experiments/paper-llama3/dskd.yaml"))
    rows = {name: gb for name, gb, _ in estimate(cfg, KNOWN_SHAPES[LLAMA], 8)}
    layer = 2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096  # 218,112,000
    embeddings = 2 * 128256 * 4096 + 4096
    student = embeddings + 16 * layer
    hand = {
        "teacher weights": 8_030_261_248 * 2,
        "student weights (shard)": student * 4 / 8,
        "FSDP gathered units": (embeddings + 2 * layer) * 2,
        "gradients (shard)": 2 * layer * 4 / 8,
        "AdamW state (shard)": 2 * layer * 8 / 8,
        "activations": 2 * 2048 * (16 * 4096 + 4 * 1024 + 8 * 14336),
        "CE + KD loss": 6 * 512 * 128256 * 4,
        "sense dictionary": 128256 * 10 * 4096 * 2,
        "CUDA context, NCCL, fragmentation": 3e9,
    }
    assert rows == pytest.approx({k: v / 1e9 for k, v in hand.items()})
    peak = (8_030_261_248 * 2 + student * 4) / 1e9  # one teacher: its continuations are their own stage
    assert startup_peak(cfg, KNOWN_SHAPES[LLAMA]) == pytest.approx(peak)
    rows16 = {name: gb for name, gb, _ in estimate(cfg, KNOWN_SHAPES[LLAMA], 16)}  # 2 nodes: shards halve
    assert rows16["student weights (shard)"] == pytest.approx(rows["student weights (shard)"] / 2)
    small_gpu = {name: gb for name, gb, _ in estimate(cfg, KNOWN_SHAPES[LLAMA], 8, gpu_gb=40)}
    assert small_gpu["sense dictionary"] == 0.0  # auto: more than 25% of 40 GB stays in pinned host memory


@pytest.mark.parametrize("share", [True, False])
def test_a_shared_trunk_leaves_only_the_trainable_layers_to_the_student_under_ddp(share):
    over = ["trainer.strategy=ddp", f"student.share_trunk={str(share).lower()}"]
    cfg = _inputs(load_config(ROOT / "experiments/paper-llama3/dskd.yaml", over))
    rows = {name: gb for name, gb, _ in estimate(cfg, KNOWN_SHAPES[LLAMA], 8)}
    layer = 2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    held = 2 * layer if share else 2 * 128256 * 4096 + 4096 + 16 * layer  # P_train, else P_S
    assert rows["student weights (shard)"] == pytest.approx(held * 4 / 1e9)  # fp32 master, unsharded
    assert rows["gradients (shard)"] == pytest.approx(2 * layer * 4 / 1e9)
    assert startup_peak(cfg, KNOWN_SHAPES[LLAMA]) == pytest.approx((8_030_261_248 * 2 + held * 4) / 1e9)
    text = render(cfg, KNOWN_SHAPES[LLAMA], 8)
    assert ("teacher + trainable layers (shared trunk)" in text) is share


def test_the_docs_show_what_the_command_prints(capsys):
    """docs/training.md and docs/benchmarks.md hold the tables `dskd memory` prints for both presets."""
    for preset in ("paper-llama3", "paper-mistral"):
        config = ROOT / "experiments" / preset / "dskd.yaml"
        assert main(["memory", str(config), "--gpus", "8"]) == 0
        printed = capsys.readouterr().out
        cfg = _inputs(load_config(config))
        assert printed == render(cfg, KNOWN_SHAPES[cfg.teacher.model], 8)
        table = printed.split("\n\n", 1)[1]
        for doc in ("training.md", "benchmarks.md"):
            assert table in (ROOT / "docs" / doc).read_text(), f"docs/{doc}: rerun `dskd memory {config}`"
        total = sum(gb for _, gb, _ in estimate(cfg, KNOWN_SHAPES[cfg.teacher.model], 8))
        assert f"{total:.1f}" in (ROOT / "docs" / "slurm.md").read_text()  # its summary of the totals


def test_the_command_says_whether_the_run_fits(capsys):
    config = ROOT / "experiments" / "paper-llama3" / "dskd.yaml"
    cfg = _inputs(load_config(config))
    rows = estimate(cfg, KNOWN_SHAPES[LLAMA], 1, gpu_gb=40)
    need = max(sum(gb for _, gb, _ in rows), startup_peak(cfg, KNOWN_SHAPES[LLAMA]))
    assert main(["memory", str(config), "--gpus", "1", "--gpu-memory", "40"]) == 0
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert need > 40  # one 40 GB GPU is too small for the 8B teacher's run
    assert verdict.startswith(
        f"Does not fit: {need:.1f} GB per GPU needed, 40 GB available ({need - 40:.1f} GB over)"
    )
    assert main(["memory", str(config), "--gpus", "8", "--gpu-memory", f"{need + 1:.1f}"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("Fits: at most")


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5", "lots"])
def test_a_gpu_memory_that_is_not_a_finite_positive_number_is_refused(value, capsys):
    config = ROOT / "experiments" / "paper-llama3" / "dskd.yaml"
    with pytest.raises(SystemExit) as exit_:
        main(["memory", str(config), "--gpu-memory", value])
    assert exit_.value.code == 2
    assert f"argument --gpu-memory: '{value}' is not a" in capsys.readouterr().err
