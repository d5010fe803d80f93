"""The rehearsal's offline stand-ins: hub records of the real field layouts, read through the mirror by
the training sources and the paper evaluation; a tokenizer with a chat template; a teacher of the family."""

from __future__ import annotations

import pytest

from dskd.corpora.prompts import PARSERS
from dskd.corpora.sources import HUB_MIRROR, HUB_QA, hub_records, mirror_file
from dskd.evaluation import online
from dskd.launch.reproduce import preset_configs
from dskd.testing.standins import family_config, hub_datasets, standin_tokenizer, write_hub_mirror


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    reads = hub_datasets(preset_configs("paper-llama3", [0], []))
    root = write_hub_mirror(tmp_path / "hub", reads, train=12, held_out=6)
    monkeypatch.setenv(HUB_MIRROR, str(root))
    return root, reads


def test_every_hub_read_of_the_paper_preset_has_a_stand_in(mirror):
    root, reads = mirror
    assert ("wikimedia/wikipedia", "20231101.en", "train") in reads
    assert ("cais/mmlu", "all", "auxiliary_train") in reads and ("cais/mmlu", "all", "test") in reads
    assert ("rajpurkar/squad_v2", None, "validation") in reads
    for dataset, subset, split in reads:
        path = mirror_file(dataset, subset, split)
        assert path == root / dataset / (subset or "default") / f"{split}.jsonl"
        assert len(list(hub_records(dataset, subset, split))) == (12 if "train" in split else 6)


def test_training_parsers_and_evaluation_converters_read_the_stand_ins(mirror):
    for kind, (dataset, subset, split) in HUB_QA.items():
        items = [PARSERS[kind](r) for r in hub_records(dataset, subset, split)]
        assert all(i.answer for i in items)
    squad = [PARSERS["squad_v2"](r) for r in hub_records("rajpurkar/squad_v2", None, "train")]
    assert {i.answer == "unanswerable" for i in squad} == {True, False}
    for r in hub_records("rajpurkar/squad_v2", None, "train"):
        for text, start in zip(r["answers"]["text"], r["answers"]["answer_start"]):
            assert r["context"][start : start + len(text)] == text
    for task in online.MC_SOURCES:
        pool, questions = online._mc_questions(task)
        assert len(questions) == 6 and len(pool) >= 6
        assert all(0 <= q.gold < len(q.choices) for q in pool + questions)


def test_without_a_mirror_file_the_hub_is_asked(tmp_path, monkeypatch):
    monkeypatch.setenv(HUB_MIRROR, str(tmp_path))
    assert mirror_file("allenai/ai2_arc", "ARC-Challenge", "train") is None
    monkeypatch.delenv(HUB_MIRROR)
    assert mirror_file("allenai/ai2_arc", "ARC-Challenge", "train") is None


def test_the_tokenizer_renders_chats_and_keeps_words_whole(mirror):
    tok = standin_tokenizer(mirror[0])
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What holds the bank?"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.startswith("<|begin_of_text|><|start_header_id|>user") and chat.endswith(
        "assistant<|end_header_id|>\n\n"
    )
    assert len(tok.tokenize(" bank")) == 1 and tok.eos_token == "<|eot_id|>"
    assert tok.decode(tok(chat).input_ids) == chat


@pytest.mark.parametrize(
    ("teacher", "family"),
    [("meta-llama/Meta-Llama-3-8B-Instruct", "llama"), ("mistralai/Mistral-7B-Instruct-v0.1", "mistral")],
)
def test_the_stand_in_teacher_is_of_the_teachers_family(teacher, family):
    assert family_config(teacher, 100, layers=18).model_type == family
