"""The shared trunk's mechanics: which modules a sharing student holds, and the split of a step into
one teacher forward and the student's trainable layers (checked against the student's own forward)."""

from __future__ import annotations

import pytest
import torch
from transformers import GemmaConfig, GemmaForCausalLM, LlamaForCausalLM, LlamaModel

from dskd.models.student import decoder_layers, truncate
from dskd.models.trunk import Trunk, shared_depth, splits_exactly


@pytest.fixture
def teacher(tiny_llama_config):
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(num_layers=4)).eval()


def test_a_sharing_student_holds_the_teachers_frozen_modules_and_its_own_trainable_layers(teacher):
    student = truncate(teacher, num_layers=3, trainable_top_layers=1, share=True)
    copies = truncate(teacher, num_layers=3, trainable_top_layers=1)
    s, t = student.model, teacher.model
    assert s.embed_tokens is t.embed_tokens and student.lm_head is teacher.lm_head and s.norm is t.norm
    assert [a is b for a, b in zip(s.layers, t.layers, strict=False)] == [True, True, False]
    assert shared_depth(student, teacher) == 2 and shared_depth(copies, teacher) == 0
    assert shared_depth(student, None) == 0
    assert len(t.layers) == 4 and teacher.config.num_hidden_layers == 4 and s is not t
    # the same state dict, names and values, as the student of copies: checkpoints and export unchanged
    assert list(student.state_dict()) == list(copies.state_dict())
    for key, value in copies.state_dict().items():
        assert torch.equal(student.state_dict()[key], value), key
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in copies.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.2.") for n in trainable)
    assert all(p.requires_grad for p in t.layers[2:].parameters())  # the teacher's own: untouched


def test_the_split_gives_the_teachers_states_and_the_students_own_forward(teacher):
    student = truncate(teacher, num_layers=3, trainable_top_layers=1, share=True)
    with torch.no_grad():
        layer = decoder_layers(student)[2]
        layer.mlp.down_proj.weight.add_(0.1)  # trained away from the teacher's layer 2
    ids = torch.randint(0, 128, (2, 9))
    am = torch.ones_like(ids)
    am[1, 6:] = 0  # right padding
    trunk = Trunk(student, teacher, 2)
    hidden, x = trunk.teacher_states(ids, am)
    want_t = teacher.model(input_ids=ids, attention_mask=am).last_hidden_state
    torch.testing.assert_close(hidden, want_t, rtol=0, atol=0)
    want_s = student.model(input_ids=ids, attention_mask=am).last_hidden_state
    got_s = trunk.student_states(x, am)
    torch.testing.assert_close(got_s, want_s, rtol=1e-6, atol=1e-6)
    assert got_s.requires_grad and not x.requires_grad  # the trunk runs without gradient
    assert splits_exactly(student, teacher)


def test_gemma_splits_too():
    """Gemma scales its embeddings inside its embedding module (transformers 5), not in the decoder."""
    config = GemmaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    torch.manual_seed(0)
    teacher = GemmaForCausalLM(config).eval()
    student = truncate(teacher, num_layers=2, trainable_top_layers=1, share=True)
    assert shared_depth(student, teacher) == 1 and splits_exactly(student, teacher)


class _RescalingDecoder(LlamaModel):
    """A decoder that changes its input embeddings in its forward (as Gemma's did before
    transformers 5): the output of a layer fed back as ``inputs_embeds`` would be changed too."""

    def forward(self, input_ids=None, inputs_embeds=None, **kw):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        return super().forward(inputs_embeds=inputs_embeds * 2.0, **kw)


def test_a_decoder_that_rescales_its_input_embeddings_does_not_split(teacher):
    teacher.model.__class__ = _RescalingDecoder
    student = truncate(teacher, num_layers=3, trainable_top_layers=1, share=True)
    assert shared_depth(student, teacher) == 2 and not splits_exactly(student, teacher)
