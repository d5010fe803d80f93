"""Students: truncation of the teacher, freezing, projection and the vocabulary check."""

from __future__ import annotations

import pytest
import torch

from dskd.core.errors import ConfigError, DSKDError
from dskd.models.config import StudentConfig
from dskd.models.student import build_projection, check_vocab, truncate


@pytest.fixture
def teacher(tiny_llama_config):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(num_layers=4)).eval()


def test_truncated_student_matches_the_teachers_first_layers(teacher):
    student = truncate(teacher, num_layers=2, trainable_top_layers=1)
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert len(teacher.model.layers) == 4 and teacher.config.num_hidden_layers == 4
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key, value in s_state.items():
        assert torch.equal(value, t_state[key]), key
        assert value.data_ptr() != t_state[key].data_ptr(), f"{key} shares storage with the teacher"
    # Same computation as the teacher's first two layers followed by its final norm and head.
    ids = torch.randint(0, 128, (2, 7))
    h = teacher.model.embed_tokens(ids)
    pos = torch.arange(7).unsqueeze(0)
    emb = teacher.model.rotary_emb(h, pos)
    for layer in teacher.model.layers[:2]:
        h = layer(h, position_embeddings=emb, attention_mask=None, position_ids=pos)
        h = h[0] if isinstance(h, tuple) else h
    expected = teacher.lm_head(teacher.model.norm(h))
    torch.testing.assert_close(student(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_only_the_top_layers_train(teacher):
    student = truncate(teacher, num_layers=3, trainable_top_layers=2)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.1.", "model.layers.2.")) for n in trainable)
    assert any(n.startswith("model.layers.1.") for n in trainable)
    assert not student.model.embed_tokens.weight.requires_grad and not student.lm_head.weight.requires_grad
    assert not student.model.norm.weight.requires_grad
    assert student.lm_head.weight is student.model.embed_tokens.weight  # tie kept


@pytest.mark.parametrize(("layers", "top"), [(0, 0), (5, 1), (2, 3)])
def test_truncation_refuses_bad_sizes(teacher, layers, top):
    with pytest.raises(ConfigError, match="student"):
        truncate(teacher, layers, top)


def test_projection(teacher, tiny_llama_config):
    from transformers import LlamaForCausalLM

    same = truncate(teacher, 2, 1)
    assert build_projection(StudentConfig(projection="auto"), same, teacher) is None
    forced = build_projection(StudentConfig(projection="linear"), same, teacher)
    assert torch.equal(forced.weight, torch.eye(32))
    narrow = LlamaForCausalLM(tiny_llama_config(hidden_size=16, num_layers=1))
    proj = build_projection(StudentConfig(projection="auto"), narrow, teacher)
    assert proj.weight.shape == (32, 16) and proj.weight.requires_grad
    with pytest.raises(ConfigError, match="hidden size"):
        build_projection(StudentConfig(projection="none"), narrow, teacher)


def _tokenizer(vocab: int):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0")


def test_vocabulary_check(teacher, tiny_llama_config):
    from transformers import LlamaForCausalLM

    check_vocab(teacher, truncate(teacher, 2, 1), _tokenizer(128))
    other = LlamaForCausalLM(tiny_llama_config(vocab_size=100, num_layers=1))
    with pytest.raises(DSKDError, match="128 rows but the student's has 100"):
        check_vocab(teacher, other, _tokenizer(100))
    with pytest.raises(DSKDError, match="tokenizer has 200 tokens"):
        check_vocab(teacher, truncate(teacher, 2, 1), _tokenizer(200))
    with pytest.raises(DSKDError, match="tokenizer differs"):
        check_vocab(teacher, truncate(teacher, 2, 1), _tokenizer(128), student_tokenizer=_tokenizer(127))
    check_vocab(teacher, truncate(teacher, 2, 1), _tokenizer(128), student_tokenizer=_tokenizer(128))
