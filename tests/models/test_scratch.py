"""The student built from a config (student.kind=scratch), the config rules of cross-tokenizer runs, and
check_vocab's refusal naming the cross-tokenizer options."""

from __future__ import annotations

import pytest
import torch

from dskd.config.loading import config_from_dict
from dskd.core.errors import ConfigError, DSKDError
from dskd.models.config import StudentConfig
from dskd.models.student import check_vocab, scratch_student
from dskd.testing.fixtures import word_tokenizer

SHAPE = {"kind": "scratch", "num_layers": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64}


def _config(**over):
    """A method=kd config with the scratch student of SHAPE and the dotted keys of ``over``."""
    data = {"method": "kd", "student": dict(SHAPE), "logging": {"wandb": False}}
    for key, value in over.items():
        node = data
        for part in key.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[key.split(".")[-1]] = value
    return config_from_dict(data)


def test_a_scratch_student_has_the_configured_shape_and_the_tokenizers_vocabulary():
    tok = word_tokenizer(50)
    model = scratch_student(StudentConfig(**SHAPE), tok, seed=0)
    c = model.config
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (50, 32, 2, 4)
    assert c.intermediate_size == 64 and c.eos_token_id == tok.eos_token_id == 2 and c.pad_token_id == 1
    assert all(p.requires_grad for p in model.parameters()) and model.training


def test_a_scratch_student_is_initialised_from_its_seed_alone():
    tok, cfg = word_tokenizer(50), StudentConfig(**SHAPE)
    a = scratch_student(cfg, tok, seed=3)
    torch.rand(100)  # the global generator moved: the same seed still gives the same weights
    b, c = scratch_student(cfg, tok, seed=3), scratch_student(cfg, tok, seed=4)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_the_scratch_keys_are_typed_and_range_checked_at_load():
    cfg = _config(**{"student.tokenizer": "wordnet-bpe", "student.bpe_vocab_size": 4000})
    assert cfg.student.kind == "scratch" and cfg.student.bpe_vocab_size == 4000
    with pytest.raises(ConfigError, match="num_heads=5 must divide student.hidden_size=32"):
        _config(**{"student.num_heads": 5})
    with pytest.raises(ConfigError, match="bpe_vocab_size"):
        _config(**{"student.bpe_vocab_size": 10})
    with pytest.raises(ConfigError, match="student.tokenizer"):
        _config(**{"student.tokenizer": "gpt2"})
    with pytest.raises(ConfigError, match="student.tokenizer=wordnet-bpe is the vocabulary of a new model"):
        _config(**{"student.kind": "truncated", "student.tokenizer": "wordnet-bpe"})


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"method": "dskd", "data.sense_aligned_neighbours": True}, "sense_aligned_neighbours"),
        ({"data.pack": True}, "needs data.pack=false"),
        ({"data.on_policy.fraction": 0.5}, "observed text only"),
        ({"loss.kd.chunk_size": 8}, "unset loss.kd.chunk_size"),
        ({"teacher.mode": "cached"}, "cannot read the teacher cache"),
    ],
)
def test_what_a_cross_tokenizer_run_does_not_do_is_refused_at_load(over, message):
    base = {"loss.kd.divergence": "uld_hybrid", "data.pack": False, "teacher.mode": "online"}
    with pytest.raises(ConfigError, match=message):
        _config(**{**base, **over})


def test_a_cross_tokenizer_config_loads():
    cfg = _config(**{"loss.kd.divergence": "uld", "data.pack": False, "teacher.mode": "online"})
    assert cfg.loss.kd.divergence == "uld"


def test_check_vocab_refuses_a_per_position_divergence_naming_the_cross_tokenizer_options(tiny_llama_config):
    from transformers import LlamaForCausalLM

    teacher = LlamaForCausalLM(tiny_llama_config(vocab_size=96))
    student = scratch_student(StudentConfig(**SHAPE), word_tokenizer(50), seed=0)
    with pytest.raises(DSKDError) as info:
        check_vocab(teacher, student, word_tokenizer(96), word_tokenizer(50), "reverse_kl")
    text = str(info.value)
    assert "do not share one vocabulary" in text and "loss.kd.divergence=reverse_kl" in text
    assert "loss.kd.divergence=uld|uld_hybrid" in text and "student.kind=scratch" in text
