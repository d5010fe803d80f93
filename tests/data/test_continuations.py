"""The teacher's greedy continuations (data.targets=teacher): equal to a plain argmax loop, built once by
their stage, refused with the command when missing, used by the stream."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dskd.data.continuations
import dskd.models.shared
from dskd.core.batch import IGNORE_INDEX
from dskd.core.errors import DSKDError
from dskd.corpora.config import SourceConfig
from dskd.corpora.prompts import QAItem, prompt_and_answer
from dskd.corpora.sources import iter_documents
from dskd.data.continuations import (
    ContinuationSet,
    build,
    cache_key,
    greedy_continuations,
    load_or_build,
    prompt_key,
    read_continuations,
)
from dskd.data.stream import PackedStream, StreamSpec

pytestmark = pytest.mark.integration  # the real SmolLM2 tokenizer


@pytest.fixture
def tiny_teacher(tiny_llama_config, tokenizer):
    torch.manual_seed(0)
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(tiny_llama_config(vocab_size=len(tokenizer), hidden_size=16, num_layers=2)).eval()


def argmax_loop(model, ids, n):
    ids = list(ids)
    out = []
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        out.append(int(logits.argmax()))
        ids.append(out[-1])
    return out


def test_greedy_continuations_match_an_argmax_loop(tiny_teacher, tokenizer):
    prompts = ["The river bank", "A short prompt about banks and money in a town"]
    got = greedy_continuations(tiny_teacher, tokenizer, prompts, new_tokens=4, batch_size=2)
    for p, cont in zip(prompts, got):
        ref = argmax_loop(tiny_teacher, tokenizer(p, add_special_tokens=False)["input_ids"], 4)
        eos = tokenizer.eos_token_id
        assert cont == (ref[: ref.index(eos) + 1] if eos in ref else ref)


def test_cache_is_built_once_and_keyed(tmp_path, tiny_teacher, tokenizer):
    calls = []

    def load():
        calls.append(1)
        return tiny_teacher

    prompts = ["one prompt", "another prompt"]
    wanted = ContinuationSet(tuple(prompts), "tiny", "fp", 3)
    a = load_or_build(tmp_path, wanted, load, tokenizer)
    b = load_or_build(tmp_path, wanted, load, tokenizer)
    assert a == b and len(calls) == 1 and set(a) == {prompt_key(p) for p in prompts}
    assert all(1 <= len(v) <= 3 for v in a.values())
    keys = {cache_key("tiny", "fp", prompts, 3), cache_key("tiny", "fp", prompts, 2)}
    keys |= {
        cache_key("other", "fp", prompts, 3),
        cache_key("tiny", "fp2", prompts, 3),
        cache_key("tiny", "fp", prompts[:1], 3),
    }
    assert len(keys) == 5
    assert [p.name for p in tmp_path.iterdir()] == [
        f"{cache_key('tiny', 'fp', prompts, 3)}.json"
    ]  # no temp files left


@pytest.mark.parametrize(
    "text, error", [("{", "JSONDecodeError"), ('{"targets": {}}', "lacks 'meta' or 'targets'")]
)
def test_a_damaged_cache_file_is_one_line(tmp_path, tokenizer, text, error):
    prompts = ["one prompt"]
    (tmp_path / f"{cache_key('tiny', 'fp', prompts, 3)}.json").write_text(text)
    with pytest.raises(DSKDError, match=error) as err:
        load_or_build(tmp_path, ContinuationSet(tuple(prompts), "tiny", "fp", 3), lambda: None, tokenizer)
    assert "Delete it" in str(err.value) and "\n" not in str(err.value)


def test_stream_trains_on_prompt_plus_teacher_continuation(tmp_path, tokenizer):
    items = [QAItem(f"Question {i}?", ("yes", "no"), "A") for i in range(3)]
    prompts = [prompt_and_answer(it, [], tokenizer)[0] for it in items]
    conts = {prompt_key(p): [tokenizer.convert_tokens_to_ids("B"), tokenizer.eos_token_id] for p in prompts}
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts))
    spec = StreamSpec(
        [SourceConfig(kind="jsonl", path=str(tmp_path / "q.jsonl"))],
        seq_len=128,
        batch_size=3,
        pack=False,
        teacher_continuations=conts,
    )
    (batch,) = list(PackedStream(spec, tokenizer))
    for ids, att, lab, p in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], prompts):
        n = int(att.sum())
        want = tokenizer(p, add_special_tokens=False)["input_ids"] + conts[prompt_key(p)]
        assert ids[:n].tolist() == want
        assert lab[: n - 1].tolist() == want[1:] and lab[n - 1] == IGNORE_INDEX  # labels over all positions
    spec.teacher_continuations = {}
    with pytest.raises(DSKDError, match="no teacher continuation"):
        list(PackedStream(spec, tokenizer))
    assert np.all(batch["labels"].numpy()[:, -1] == IGNORE_INDEX)


def test_the_continuations_stage_builds_once_and_the_datamodule_trains_on_them(
    tmp_path, tokenizer, tiny_teacher, monkeypatch
):
    """Paper recipe on BIG-bench fixture prompts: the stage runs the teacher (a saved tiny Llama folder,
    loaded like any teacher) once; reading them before that names the command, a second build and
    a later run (or a requeued job) read the files."""
    from dskd.config.schema import ExperimentConfig
    from dskd.data.datamodule import DSKDDataModule

    from ..corpora.conftest import FIXTURES

    tiny_teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    cfg = ExperimentConfig(method="kd")
    cfg.teacher.model = str(tmp_path / "teacher")
    cfg.data.train = [
        SourceConfig(kind="bigbench", path=str(FIXTURES / "bigbench/toy_mc/task.json"), shots=1)
    ]
    cfg.data.targets, cfg.data.teacher_new_tokens = "teacher", 2
    cfg.data.continuations_dir, cfg.data.val_fraction = str(tmp_path / "targets"), 0.0
    cfg.data.seq_len, cfg.data.pack, cfg.data.batch_size = 256, False, 6
    with pytest.raises(DSKDError, match="`dskd continuations build CONFIG"):
        read_continuations(cfg.data, cfg.teacher, tokenizer, cfg.seed)
    with pytest.raises(DSKDError, match="needs the teacher's continuations"):
        DSKDDataModule(cfg.data, cfg.seed, tokenizer).setup("fit")
    out, stats = build(cfg)
    (cache,) = out.glob("????????????????????????.json")
    assert json.loads(cache.read_text())["meta"]["prompts"] == 6
    assert stats["generated_files"] == 1 and stats["prompts"] == 6
    assert json.loads((out / "stats.json").read_text()) == stats

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded again")

    monkeypatch.setattr(dskd.models.shared, "load_causal_lm", no_teacher)
    assert build(cfg).stats["generated_files"] == 0
    continuations = read_continuations(cfg.data, cfg.teacher, tokenizer, cfg.seed)
    assert continuations == json.loads(cache.read_text())["targets"]
    dm = DSKDDataModule(cfg.data, cfg.seed, tokenizer, continuations=continuations)
    dm.setup("fit")
    (batch,) = [dm.on_before_batch_transfer(b, 0) for b in dm.train_dataloader()]
    for ids, att, lab in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        n = int(att.sum())
        text = tokenizer.decode(ids[:n])
        prompt_end = text.rindex("<|im_start|>assistant\n") + len("<|im_start|>assistant\n")
        cont = tokenizer(text[prompt_end:], add_special_tokens=False)["input_ids"]
        assert 1 <= len(cont) <= 2 and lab[n - 1] == IGNORE_INDEX and (lab[: n - 1] == ids[1:n]).all()


def test_teacher_new_tokens_per_source(tmp_path, tokenizer, tiny_teacher, monkeypatch):
    """A source's own teacher_new_tokens (the paper: 1 for multiple choice, 10 for SQuAD) sets the length
    of its prompts' continuations; the others take data.teacher_new_tokens. One file per length,
    one teacher load for both."""
    from dskd.config.schema import ExperimentConfig

    from ..corpora.conftest import FIXTURES

    tiny_teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    task = str(FIXTURES / "bigbench/toy_mc/task.json")
    cfg = ExperimentConfig(method="kd")
    cfg.teacher.model = str(tmp_path / "teacher")
    cfg.data.train = [
        SourceConfig(kind="bigbench", path=task, shots=1),
        SourceConfig(kind="bigbench", path=task, shots=0, teacher_new_tokens=4),
    ]
    cfg.data.targets, cfg.data.teacher_new_tokens = "teacher", 1
    cfg.data.continuations_dir, cfg.data.val_fraction = str(tmp_path / "targets"), 0.0
    loads, load = [], dskd.models.shared.load_causal_lm

    def counted(*args, **kwargs):
        loads.append(1)
        return load(*args, **kwargs)

    monkeypatch.setattr(dskd.models.shared, "load_causal_lm", counted)
    build(cfg)
    continuations = read_continuations(cfg.data, cfg.teacher, tokenizer, cfg.seed)
    metas = [
        json.loads(p.read_text())["meta"]
        for p in (tmp_path / "targets").glob("????????????????????????.json")
    ]
    assert sorted((m["new_tokens"], m["prompts"]) for m in metas) == [(1, 6), (4, 6)] and len(loads) == 1
    eos = tokenizer.eos_token_id
    for src, n in zip(cfg.data.train, (1, 4)):
        for doc in iter_documents([src], tokenizer):
            cont = continuations[prompt_key(doc.meta["prompt"])]
            ids = tokenizer(doc.meta["prompt"], add_special_tokens=False)["input_ids"]
            ref = argmax_loop(tiny_teacher, ids, n)
            assert cont == (ref[: ref.index(eos) + 1] if eos in ref else ref)
