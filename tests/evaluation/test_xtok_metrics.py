"""Held-out scores of a cross-tokenizer student, checked against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from dskd.data.alignment import align, encode
from dskd.evaluation.config import EvalConfig
from dskd.evaluation.tasks import Building, _heldout_build
from dskd.evaluation.xtok_metrics import nll_per_byte, xtok_scores

TEXTS = [
    "The quick brown fox jumps over the lazy dog, twice.",
    "To be, or not to be: that is the question; whether 'tis nobler in the mind to suffer.",
]


def test_nll_per_byte_by_hand():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.5, -1.0, 0.0], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[2, 0, -100]])
    lse0 = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    lse1 = math.log(math.exp(0.5) + math.exp(-1) + math.exp(0))
    want = ((lse0 - 3.0) + (lse1 - 0.5)) / 4.0
    assert nll_per_byte(logits, labels, torch.tensor([4.0])).item() == pytest.approx(want, rel=1e-6)


def _model(cfg_factory, vocab: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg_factory(vocab_size=vocab, hidden_size=32, num_layers=2)).eval()


def _merged(logp: torch.Tensor, ids: np.ndarray, tokens: list[int]) -> torch.Tensor:
    """The span vector by the chain rule: the last token's row times p(earlier tokens) (merge=last)."""
    vec = logp[tokens[-1] - 1].exp()
    for j in tokens[:-1]:
        vec = vec * logp[j - 1, ids[j]].exp().clamp_min(1e-8)
    return vec


def _sorted_l1(p: torch.Tensor, q: torch.Tensor) -> float:
    p, q = p.sort(descending=True).values, q.sort(descending=True).values
    width = max(len(p), len(q))
    return float(
        (torch.nn.functional.pad(p, (0, width - len(p))) - torch.nn.functional.pad(q, (0, width - len(q))))
        .abs()
        .sum()
    )


def test_scores_equal_a_direct_computation(tiny_llama_config, smollm2_tokenizer, wordnet_bpe):
    """Per text: NLL per own token, nats per byte and the mean sorted-L1 over aligned spans (the span of
    token 0, which no position predicts, left out), each computed one text at a time, unpadded."""
    teacher = _model(tiny_llama_config, len(smollm2_tokenizer), 0)
    student = _model(tiny_llama_config, len(wordnet_bpe), 1)
    got = xtok_scores(student, (smollm2_tokenizer, wordnet_bpe), TEXTS, teacher, block_len=64, batch_size=2)
    for b, text in enumerate(TEXTS):
        t, s = encode(smollm2_tokenizer, text, 64), encode(wordnet_bpe, text, 64)
        with torch.no_grad():
            s_logp = student(input_ids=torch.from_numpy(s.ids)[None]).logits[0].float().log_softmax(-1)
            t_logp = teacher(input_ids=torch.from_numpy(t.ids)[None]).logits[0].float().log_softmax(-1)
        nll = -s_logp[:-1].gather(-1, torch.from_numpy(s.ids[1:])[:, None]).sum().item()
        n_bytes = len(text.encode()) - (s.spans[0, 1] - s.spans[0, 0])
        assert got.block_nats_per_byte[b] == pytest.approx(nll / n_bytes, rel=1e-5)
        assert got.block_nll[b] == pytest.approx(nll / (len(s.ids) - 1), rel=1e-5)
        spans = align(t.spans, s.spans)
        first = spans.student[0]
        dists = [
            _sorted_l1(_merged(s_logp, s.ids, s_tok), _merged(t_logp, t.ids, t_tok))
            for k, (t_tok, s_tok) in enumerate(spans.groups())
            if k != first and t_tok and s_tok
        ]
        assert len(dists) > 5 and got.block_span_uld[b] == pytest.approx(float(np.mean(dists)), rel=1e-4)
    assert got.perplexity == pytest.approx(math.exp(np.mean(got.block_nll)), rel=1e-9)
    assert got.n_tokens == sum(len(encode(wordnet_bpe, x, 64).ids) - 1 for x in TEXTS)


def test_heldout_blocks_carry_their_text_and_bytes(smollm2_tokenizer, tmp_path):
    """The tiny preset's 64 Shakespeare blocks decode to text both tokenizers can place on bytes; the bytes a
    block's predictions cover are its text's bytes less its first token's."""
    built = _heldout_build(Building(EvalConfig(heldout_blocks=64), smollm2_tokenizer, tmp_path))
    assert len(built.texts) == len(built.n_bytes) == 64
    for ids, text, n_bytes in zip(built.ids, built.texts, built.n_bytes):
        first = smollm2_tokenizer.decode(ids[:1], clean_up_tokenization_spaces=False)
        assert n_bytes == len(text.encode()) - len(first.encode()) > 0
