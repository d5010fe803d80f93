"""Held-out scores of a cross-tokenizer student, checked against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from dskd.data.alignment import align, encode
from dskd.evaluation.config import EvalConfig
from dskd.evaluation.tasks import Building, _heldout_build
from dskd.evaluation.xtok_metrics import SPAN_ULD, nll_per_byte, span_kl, xtok_scores
from dskd.losses.uld import SpanSide, VocabMatch, span_losses

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
    """Per text: NLL per own token, nats per byte, the mean sorted-L1 over aligned spans (the span of
    token 0, which no position predicts, left out) and the mean restricted KL at each span's first tokens,
    each computed one text at a time, unpadded; span KL's coverage from the same spans."""
    teacher = _model(tiny_llama_config, len(smollm2_tokenizer), 0)
    student = _model(tiny_llama_config, len(wordnet_bpe), 1)
    got = xtok_scores(student, (smollm2_tokenizer, wordnet_bpe), TEXTS, teacher, block_len=64, batch_size=2)
    match, n_spans = VocabMatch.of(smollm2_tokenizer, wordnet_bpe), 0
    assert len(match.teacher) > 1000
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
        assert got.block_span_kl[b] == pytest.approx(_direct_span_kl(t_logp, s_logp, spans, match), rel=1e-4)
        n_spans += len(dists)
    assert got.perplexity == pytest.approx(math.exp(np.mean(got.block_nll)), rel=1e-9)
    assert got.n_tokens == sum(len(encode(wordnet_bpe, x, 64).ids) - 1 for x in TEXTS)
    assert got.span_kl == pytest.approx(np.mean(got.block_span_kl), rel=1e-9)
    assert got.span_kl_coverage.scored == pytest.approx(n_spans / got.n_tokens)
    assert 0.0 < got.span_kl_coverage.teacher_mass < 1.0 and 0.0 < got.span_kl_coverage.student_mass < 1.0


def _direct_span_kl(t_logp: torch.Tensor, s_logp: torch.Tensor, spans, match: VocabMatch) -> float:
    """Mean over the spans (token 0's aside) of F.kl_div at the rows predicting each span's first tokens,
    over the shared strings, each side renormalised."""
    first = spans.student[0]
    kls = [
        F.kl_div(
            s_logp[min(s_tok) - 1, match.student].log_softmax(-1),
            t_logp[min(t_tok) - 1, match.teacher].log_softmax(-1),
            log_target=True,
            reduction="sum",
        ).item()
        for k, (t_tok, s_tok) in enumerate(spans.groups())
        if k != first and t_tok and s_tok
    ]
    return float(np.mean(kls))


def test_heldout_blocks_carry_their_text_and_bytes(smollm2_tokenizer, tmp_path):
    """The tiny preset's 64 Shakespeare blocks decode to text both tokenizers can place on bytes; the bytes a
    block's predictions cover are its text's bytes less its first token's."""
    built = _heldout_build(Building(EvalConfig(heldout_blocks=64), smollm2_tokenizer, tmp_path))
    assert len(built.texts) == len(built.n_bytes) == 64
    for ids, text, n_bytes in zip(built.ids, built.texts, built.n_bytes):
        first = smollm2_tokenizer.decode(ids[:1], clean_up_tokenization_spaces=False)
        assert n_bytes == len(text.encode()) - len(first.encode()) > 0


# ---- span KL on hand-made logits -------------------------------------------------------------------

MATCH = VocabMatch(teacher=torch.tensor([0, 2, 3]), student=torch.tensor([1, 0, 4]))
"""Teacher strings 0, 2, 3 are student strings 1, 0, 4; teacher 1 and students 2, 3 are not shared."""


def _side(logits: list[list[float]], span: list[int]) -> SpanSide:
    return SpanSide(torch.tensor([logits]), torch.zeros(1, len(span), dtype=torch.long), torch.tensor([span]))


def test_span_kl_equals_kl_div_at_each_spans_first_positions_by_hand():
    """Student spans [0, 0, 1] start at positions 0 and 2, teacher spans [0, 1, -1] at 0 and 1: span 0
    pairs teacher row 0 with student row 0, span 1 teacher row 1 with student row 2 (row 1, inside span
    0, is not read); each KL is F.kl_div over the shared strings' renormalised distributions."""
    t = [[1.0, 5.0, 0.0, -1.0], [0.3, -2.0, 2.0, 0.7], [9.0, 9.0, 9.0, 9.0]]
    s = [[0.5, 2.0, -1.0, 3.0, 0.0], [9.0, -9.0, 9.0, -9.0, 9.0], [1.5, -0.5, 0.0, 0.0, 2.5]]
    got = span_kl(_side(s, [0, 0, 1]), _side(t, [0, 1, -1]), MATCH)
    tt, ss = torch.tensor(t), torch.tensor(s)
    for k, (t_row, s_row) in enumerate([(0, 0), (1, 2)]):
        log_t = tt[t_row, [0, 2, 3]].log_softmax(-1)
        log_s = ss[s_row, [1, 0, 4]].log_softmax(-1)
        want = F.kl_div(log_s, log_t, log_target=True, reduction="sum")
        assert got.kl[k].item() == pytest.approx(want.item(), rel=1e-6)
        assert got.teacher_mass[k].item() == pytest.approx(tt[t_row].softmax(-1)[[0, 2, 3]].sum().item())
        assert got.student_mass[k].item() == pytest.approx(ss[s_row].softmax(-1)[[1, 0, 4]].sum().item())
    assert got.seq.tolist() == [0, 0]
    # teacher row 0 puts most of its mass on its unshared string 1: span 0 sees e^0+e^1.. of e^5
    assert got.teacher_mass[0].item() < 0.05


def test_span_kl_is_zero_when_the_models_agree_on_the_shared_strings_whatever_the_rest():
    """The student's shared logits are the teacher's plus a constant, its unshared ones anything: after
    renormalising over the shared strings the two agree exactly (span ULD, which sees the whole
    vectors, does not)."""
    t = [[1.0, 5.0, 0.0, -1.0], [0.3, -2.0, 2.0, 0.7]]
    s = [[0.0 + 3, 1.0 + 3, 4.0, -2.0, -1.0 + 3], [2.0 - 1, 0.3 - 1, 6.0, 6.0, 0.7 - 1]]
    student, teacher = _side(s, [0, 1]), _side(t, [0, 1])
    assert span_kl(student, teacher, MATCH).kl.abs().max().item() < 1e-6
    uld, _ = span_losses(student, teacher, SPAN_ULD)
    assert uld.min().item() > 0.1


def test_span_kl_sees_mass_move_between_shared_strings_that_span_uld_cannot():
    """The student is the teacher with the probabilities of two shared strings swapped (teacher strings 0
    and 2, student strings 1 and 0): the sorted masses are the same, so span ULD is 0, while span KL is
    the KL of the swap."""
    t = [[2.0, 0.0, -1.0, 0.5, -5.0]]  # shared (teacher 0, 2, 3): 2.0, -1.0, 0.5; unshared 0.0, -5.0
    s = [[2.0, -1.0, 0.0, -5.0, 0.5]]  # shared (student 1, 0, 4): -1.0, 2.0, 0.5; unshared 0.0, -5.0
    student, teacher = _side(s, [0]), _side(t, [0])
    uld, _ = span_losses(student, teacher, SPAN_ULD)
    assert uld.item() == pytest.approx(0.0, abs=1e-6)
    log_t = torch.tensor([2.0, -1.0, 0.5]).log_softmax(-1)
    log_s = torch.tensor([-1.0, 2.0, 0.5]).log_softmax(-1)
    want = F.kl_div(log_s, log_t, log_target=True, reduction="sum").item()
    assert want > 1.0 and span_kl(student, teacher, MATCH).kl.item() == pytest.approx(want, rel=1e-6)
