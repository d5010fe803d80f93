"""The benchmark registry: a new benchmark is one object, and it reaches results.json and the table."""

from __future__ import annotations

import json

import pytest
import torch

from dskd.config.loading import config_from_dict
from dskd.core.errors import ConfigError
from dskd.evaluation import tasks as registry
from dskd.evaluation.run import evaluate
from dskd.evaluation.scores import Score
from dskd.evaluation.suite import check_tasks
from dskd.evaluation.tasks import Benchmark, Building, Scoring, register
from dskd.models.loading import load_causal_lm
from dskd.testing.fixtures import llama_config, random_model_dir, word_tokenizer

VOCAB = 48


def _sequences(b: Building) -> torch.Tensor:
    """Six random sequences of the teacher's vocabulary (seeded by eval.seed)."""
    g = torch.Generator().manual_seed(b.cfg.seed)
    return torch.randint(3, len(b.tokenizer), (6, 8), generator=g)


def _top1(model, seqs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=seqs).logits[:, :-1].argmax(-1)


def _score(seqs: torch.Tensor, s: Scoring) -> list[Score]:
    """Next-token accuracy, and for a student agreement with the teacher's top-1."""
    correct = (_top1(s.model, seqs) == seqs[:, 1:]).float().mean(-1)  # per sequence: the bootstrap's items
    out = [Score("toy", "acc", correct.mean().item(), 6, 1 / VOCAB, 0.0, True, items=correct.tolist())]
    if s.teacher is not None:
        agree = (_top1(s.model, seqs) == _top1(s.teacher, seqs)).float().mean().item()
        out.append(Score("toy", "agreement", agree, 6, None, 0.0))
    return out


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(registry, "BENCHMARKS", dict(registry.BENCHMARKS))  # registered for this test only
    return register(Benchmark("toy", _sequences, _score, needs_teacher=True))


def test_a_registered_benchmark_runs_end_to_end(tmp_path, toy):
    teacher = random_model_dir(tmp_path / "teacher", llama_config(VOCAB, 16, 2), seed=0)
    student = random_model_dir(tmp_path / "student", llama_config(VOCAB, 16, 1), seed=1)
    cfg = config_from_dict(
        {
            "teacher": {"model": str(teacher), "dtype": "float32"},
            "eval": {
                "tasks": ["toy"],
                "output_dir": str(tmp_path / "results"),
                "plot": False,
                "baseline": "kd",
            },
            "logging": {"wandb": False},
        }
    )
    evaluate(cfg, {"teacher": str(teacher), "kd@0": str(student)})
    results = json.loads((tmp_path / "results" / "results.json").read_text())["results"]
    got = {(r["model"], r["metric"]): r["value"] for r in results}
    assert set(got) == {
        ("teacher", "acc"),
        ("kd", "acc"),
        ("kd", "agreement"),
    }  # the teacher gets no agreement
    items = _sequences(Building(cfg.eval, word_tokenizer(VOCAB), tmp_path))  # the items every model saw
    t, s = (load_causal_lm(p, dtype="float32") for p in (teacher, student))
    assert got[("teacher", "acc")] == pytest.approx((_top1(t, items) == items[:, 1:]).float().mean().item())
    assert got[("kd", "acc")] == pytest.approx((_top1(s, items) == items[:, 1:]).float().mean().item())
    assert got[("kd", "agreement")] == pytest.approx(
        (_top1(s, items) == _top1(t, items)).float().mean().item()
    )
    table = (tmp_path / "results" / "table.md").read_text()
    assert "| model | toy acc | toy agreement | average |" in table
    # the difference table: the teacher against the baseline kd on the toy's per-sequence accuracies
    diff = table.partition("### Difference to kd (95% paired-bootstrap interval)")[2]
    teacher_row = next(line for line in diff.splitlines() if line.startswith("| teacher |"))
    assert teacher_row.startswith(f"| teacher | {got[('teacher', 'acc')] - got[('kd', 'acc')]:+.3f} [")


def test_names_are_checked_against_the_registry(toy):
    check_tasks(["toy", "wsd", "bigbench/odd_one_out", "paper/piqa"])
    with pytest.raises(ConfigError, match=r"Unknown eval task 'nope'.*toy.*bigbench/<task>"):
        check_tasks(["nope"])
    with pytest.raises(ConfigError, match="exists already"):
        register(Benchmark("toy", _sequences, _score))
