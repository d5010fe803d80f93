"""`dskd memory`: the per-GPU estimate against hand computations, real parameter counts and the docs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dskd.cli import main
from dskd.config.loading import load_config
from dskd.config.schema import ExperimentConfig
from dskd.models.loading import load_causal_lm
from dskd.training.memory import (
    KNOWN_SHAPES,
    MemoryInputs,
    ModelShape,
    estimate,
    render,
    startup_peak,
    teacher_shape,
)
from dskd.training.run import load_senses

from .tinyrun import VOCAB, make_tokenizer, tiny_config, write_lexicon

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
    sections = (cfg.name, cfg.method, cfg.teacher, cfg.student, cfg.trainer, cfg.data, cfg.loss)
    return MemoryInputs(*sections, cfg.senses, cfg.lexicon.output_dir)


def test_the_paper_teachers_have_their_published_sizes():
    assert KNOWN_SHAPES[LLAMA].params() == 8_030_261_248
    assert KNOWN_SHAPES["mistralai/Mistral-7B-Instruct-v0.1"].params() == 7_241_732_096


@pytest.mark.parametrize("share", [True, False], ids=["shared", "copies"])
def test_paper_llama3_on_eight_gpus_by_hand(share):
    """The preset as written (fsdp, the trunk shared: FSDP shards and gathers the trainable layers
    only), and with student.share_trunk=false (FSDP shards the whole student, embeddings and all)."""
    over = [] if share else ["student.share_trunk=false"]
    cfg = _inputs(load_config(ROOT / "experiments/paper-llama3/dskd.yaml", over))
    rows = {name: gb for name, gb, _ in estimate(cfg, KNOWN_SHAPES[LLAMA], 8)}
    layer = 2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096  # 218,112,000
    embeddings = 2 * 128256 * 4096 + 4096
    student = 2 * layer if share else embeddings + 16 * layer  # P_train, else P_S
    hand = {
        "teacher weights": 8_030_261_248 * 2,
        "student weights (shard)": student * 4 / 8,
        "FSDP gathered units": (2 * layer if share else embeddings + 2 * layer) * 2,
        "gradients (shard)": 2 * layer * 4 / 8,
        "AdamW state (shard)": 2 * layer * 8 / 8,
        "activations": 2 * 2048 * (16 * 4096 + 4 * 1024 + 8 * 14336),
        "CE + KD loss": 6 * 512 * 128256 * 4,
        "sense dictionary": 128256 * 10 * 4096 * 2 + 16 * 128256,  # no dictionary built: V keys, k senses
        "CUDA context, NCCL, fragmentation": 3e9,
    }
    assert rows == pytest.approx({k: v / 1e9 for k, v in hand.items()})
    peak = (8_030_261_248 * 2 + student * 4) / 1e9  # one teacher: its continuations are their own stage
    assert startup_peak(cfg, KNOWN_SHAPES[LLAMA]) == pytest.approx(peak)
    assert ("teacher + trainable layers (shared trunk)" in render(cfg, KNOWN_SHAPES[LLAMA], 8)) is share
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
    rows = estimate(cfg, KNOWN_SHAPES[LLAMA], 1, gpu_gb=24)
    need = max(sum(gb for _, gb, _ in rows), startup_peak(cfg, KNOWN_SHAPES[LLAMA]))
    assert main(["memory", str(config), "--gpus", "1", "--gpu-memory", "24"]) == 0
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert need > 24  # one 24 GB GPU is too small for the 8B teacher's run
    assert verdict.startswith(
        f"Does not fit: {need:.1f} GB per GPU needed, 24 GB available ({need - 24:.1f} GB over)"
    )
    assert main(["memory", str(config), "--gpus", "8", "--gpu-memory", f"{need + 1:.1f}"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("Fits: at most")


def test_a_student_deeper_than_the_teacher_is_refused_as_training_refuses_it(capsys):
    config = ROOT / "experiments" / "paper-llama3" / "dskd.yaml"
    assert main(["memory", str(config), "student.num_layers=100000"]) == 2  # was a verdict on 2.8 T params
    assert (
        "student.num_layers=100000 must be between 1 and the teacher's 32 layers" in capsys.readouterr().err
    )


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5", "lots"])
def test_a_gpu_memory_that_is_not_a_finite_positive_number_is_refused(value, capsys):
    config = ROOT / "experiments" / "paper-llama3" / "dskd.yaml"
    with pytest.raises(SystemExit) as exit_:
        main(["memory", str(config), "--gpu-memory", value])
    assert exit_.value.code == 2
    assert f"argument --gpu-memory: '{value}' is not a" in capsys.readouterr().err


def _dictionary_row(cfg: ExperimentConfig) -> tuple[float, str]:
    """(GB, formula) of the sense dictionary row of ``cfg`` on one 80 GB GPU."""
    rows = {
        name: (gb, formula) for name, gb, formula in estimate(_inputs(cfg), teacher_shape(cfg.teacher), 1)
    }
    return rows["sense dictionary"]


def test_the_dictionary_row_is_the_built_dictionary_as_a_run_loads_it(run_tmp, teacher_dir):
    write_lexicon(run_tmp / "lex", VOCAB)
    tokenizer, teacher = make_tokenizer(), load_causal_lm(str(teacher_dir))
    sizes = []
    for restrict in (False, True):
        over = {
            "senses.device": "auto",
            "senses.restrict_to_lexicon": restrict,
            "lexicon.output_dir": str(run_tmp / "lex"),
        }
        cfg = tiny_config(run_tmp, teacher_dir, "dskd", over)
        gb, formula = _dictionary_row(cfg)
        loaded = load_senses(cfg.senses, cfg.lexicon.output_dir, tokenizer, teacher)
        assert gb == pytest.approx(loaded.nbytes / 1e9, rel=1e-12) and "(the built dictionary)" in formula
        assert f"{len(loaded.rows):,} senses" in formula
        sizes.append(loaded.nbytes)
    assert sizes[1] < sizes[0]  # the lexicon's keys only


def test_before_the_dictionary_exists_the_row_is_an_upper_bound_from_the_vocabulary_and_lexicon(
    tmp_path, teacher_dir
):
    over = {"senses.device": "auto", "lexicon.output_dir": str(tmp_path / "lex")}
    k, d = 10, 32  # senses.k's default, the teacher's hidden size
    gb, formula = _dictionary_row(tiny_config(tmp_path, teacher_dir, "dskd", over))
    assert gb * 1e9 == pytest.approx(VOCAB * k * d * 2 + 16 * VOCAB) and formula.startswith("at most V x k")
    write_lexicon(tmp_path / "lex", VOCAB)  # 2 VIDs; 8 keys the sense loss can ask for
    gb, formula = _dictionary_row(tiny_config(tmp_path, teacher_dir, "dskd", over))
    assert gb * 1e9 == pytest.approx((VOCAB + 2) * (k * d * 2 + 16)) and "V + VIDs" in formula
    restricted = tiny_config(tmp_path, teacher_dir, "dskd", {**over, "senses.restrict_to_lexicon": True})
    gb, formula = _dictionary_row(restricted)
    assert gb * 1e9 == pytest.approx(8 * k * d * 2 + 16 * (VOCAB + 2)) and "lexicon keys" in formula
