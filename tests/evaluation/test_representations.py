"""Span embeddings and held-out LM metrics on a tiny random Llama, against direct torch computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dskd.evaluation.lm_metrics import lm_scores
from dskd.evaluation.representations import embed_spans


@pytest.fixture
def tiny_lm(tiny_llama_config):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(vocab_size=49152, hidden_size=32, num_layers=2)).eval()


def test_embed_spans_is_mean_over_the_span_tokens(tiny_lm, smollm2_tokenizer):
    tok = smollm2_tokenizer
    tok.pad_token = tok.pad_token or tok.eos_token
    texts = ["the river bank was muddy", "a bank"]
    spans = [(10, 14), (2, 6)]
    got = embed_spans(tiny_lm, tok, texts, spans, batch_size=2)
    for i, (text, (s, e)) in enumerate(zip(texts, spans)):
        enc = tok(text, return_offsets_mapping=True)
        idx = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if a < e and b > s]
        assert "".join(text[a:b] for a, b in (enc["offset_mapping"][j] for j in idx)).strip() == "bank"
        with torch.no_grad():
            hidden = tiny_lm(torch.tensor([enc["input_ids"]]), output_hidden_states=True).hidden_states[-1][0]
        torch.testing.assert_close(got[i], hidden[idx].mean(0), atol=1e-5, rtol=1e-4)


def test_lm_scores_against_cross_entropy_and_kl(tiny_lm, tiny_llama_config):
    from transformers import LlamaForCausalLM

    torch.manual_seed(1)
    other = LlamaForCausalLM(tiny_llama_config(vocab_size=49152, hidden_size=32, num_layers=2)).eval()
    blocks = torch.randint(0, 49152, (3, 12))
    got = lm_scores(other, blocks, teacher=tiny_lm, batch_size=2)
    with torch.no_grad():
        s_logits, t_logits = other(blocks).logits[:, :-1], tiny_lm(blocks).logits[:, :-1]
    ce = F.cross_entropy(s_logits.reshape(-1, 49152), blocks[:, 1:].reshape(-1))
    assert got.perplexity == pytest.approx(math.exp(ce.item()), rel=1e-4)
    p_t = t_logits.softmax(-1)
    kl = (p_t * (p_t.log() - s_logits.log_softmax(-1))).sum(-1).mean()
    assert got.kl == pytest.approx(kl.item(), rel=1e-4)
    agree = (s_logits.argmax(-1) == t_logits.argmax(-1)).float().mean()
    assert got.top1_agreement == pytest.approx(agree.item())
    assert got.n_tokens == 3 * 11
    # per block (the items of the paired bootstrap): the same quantities averaged within each block
    block_ce = F.cross_entropy(s_logits.transpose(1, 2), blocks[:, 1:], reduction="none").mean(-1)
    assert got.block_nll == pytest.approx(block_ce.tolist(), rel=1e-4)
    block_kl = (p_t * (p_t.log() - s_logits.log_softmax(-1))).sum(-1).mean(-1)
    assert got.block_kl == pytest.approx(block_kl.tolist(), rel=1e-4)
    block_agree = (s_logits.argmax(-1) == t_logits.argmax(-1)).float().mean(-1)
    assert got.block_top1 == pytest.approx(block_agree.tolist())
    self_scores = lm_scores(tiny_lm, blocks, teacher=tiny_lm)
    assert self_scores.top1_agreement == 1.0 and self_scores.kl == pytest.approx(0.0, abs=1e-6)
