"""Cross-tokenizer ULD and its hybrid against TRL's GOLD ULDLoss, on the real SmolLM2 tokenizer (teacher)
and the project's WordNet BPE (student), plus hand-computed values and the config's refusals."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from dskd.config.loading import load_config
from dskd.core.batch import CROSS_TOKENIZER_KEYS, IGNORE_INDEX
from dskd.core.errors import ConfigError, DSKDError
from dskd.data.alignment import align_text, cross_tokenizer_batch
from dskd.losses.config import KDConfig
from dskd.losses.kd import divergence_per_position
from dskd.losses.uld import SpanSide, VocabMatch, span_losses, uld_loss

TEXTS = [
    "the banks  of   the river overflowed",
    "naïve café 😀 日本語\n\n tab\there",
    "Photosynthesis converts light energy into chemical energy.",
]
PROMPT = "Define:"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gold_side(trl_gold, tokenizer, gen: torch.Generator, vocab: int) -> dict[str, torch.Tensor]:
    """GOLD's inputs of one model: a prompt then each text, labels on the text, byte offsets, logits."""
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    encs = trl_gold.encode_with_byte_offsets(tokenizer.backend_tokenizer, TEXTS)
    width = len(prompt) + max(len(ids) for ids, _ in encs)
    ids = torch.full((len(TEXTS), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    offsets = torch.zeros(len(TEXTS), width, 2, dtype=torch.long)
    for b, (text_ids, offs) in enumerate(encs):
        end = len(prompt) + len(text_ids)
        ids[b, :end] = torch.tensor(prompt + text_ids)
        labels[b, len(prompt) : end] = torch.tensor(text_ids)
        offsets[b, len(prompt) : end] = torch.tensor(offs)
    logits = 4 * torch.randn(len(TEXTS), width, vocab, generator=gen, dtype=torch.float64)
    return {"ids": ids, "labels": labels, "offsets": offsets, "logits": logits, "start": len(prompt)}


def our_side(side: dict, spans: list[np.ndarray], merge: str) -> SpanSide:
    """The same inputs in our convention: position p scores ``targets[p]`` and lies in span ``span[p]``.
    merge=last (GOLD's "bayesian") reads the row before each text token (next-token rows), merge=first
    (GOLD's "observed") the text token's own row, as GOLD slices them."""
    shift = 1 if merge == "last" else 0
    span = torch.full_like(side["ids"], -1)
    targets = torch.zeros_like(side["ids"])
    for b, ids in enumerate(spans):
        rows = slice(side["start"] - shift, side["start"] - shift + len(ids))
        span[b, rows] = torch.from_numpy(ids)
        targets[b, rows] = side["labels"][b, side["start"] : side["start"] + len(ids)]
    return SpanSide(side["logits"], targets, span)


def gold_loss(trl_gold, teacher_tok, student_tok, kd: KDConfig, t: dict, s: dict) -> torch.Tensor:
    config = trl_gold.GOLDConfig(
        output_dir="/tmp/gold-unused",
        report_to=[],
        bf16=False,
        use_cpu=True,
        use_uld_loss=True,
        uld_use_hybrid_loss=kd.divergence == "uld_hybrid",
        uld_hybrid_matched_weight=kd.uld_matched_weight,
        uld_hybrid_unmatched_weight=kd.uld_unmatched_weight,
        uld_token_merge_strategy="bayesian" if kd.uld_merge == "last" else "observed",
        uld_student_temperature=kd.tau,
        uld_teacher_temperature=kd.tau,
        uld_skip_student_eos=False,
        uld_skip_teacher_eos=False,
        beta=kd.beta,
    )
    loss = trl_gold.ULDLoss(config, student_tokenizer=student_tok, teacher_tokenizer=teacher_tok)
    args = (s["logits"], t["logits"], s["labels"], t["labels"], s["ids"], t["ids"])
    return loss(*args, student_byte_offsets=s["offsets"], teacher_byte_offsets=t["offsets"])


CASES = [
    KDConfig(divergence="uld", uld_merge="last", tau=1.0),
    KDConfig(divergence="uld", uld_merge="first", tau=2.0),
    KDConfig(divergence="uld_hybrid", uld_merge="last"),
    KDConfig(divergence="uld_hybrid", uld_merge="first", beta=0.3),
    KDConfig(divergence="uld_hybrid", uld_merge="last", uld_matched_weight=0.3, uld_unmatched_weight=0.7),
    KDConfig(divergence="uld_hybrid", uld_merge="last", beta=0.0, tau=1.5),
    KDConfig(divergence="uld_hybrid", uld_merge="first", beta=1.0),
]


@pytest.mark.parametrize("kd", CASES, ids=lambda kd: f"{kd.divergence}-{kd.uld_merge}-b{kd.beta}-t{kd.tau}")
def test_value_and_student_gradient_equal_gold(kd, smollm2_tokenizer, wordnet_bpe, trl_gold):
    gen = torch.Generator().manual_seed(0)
    t = gold_side(trl_gold, smollm2_tokenizer, gen, len(smollm2_tokenizer))
    s = gold_side(trl_gold, wordnet_bpe, gen, len(wordnet_bpe))
    aligned = [align_text(text, smollm2_tokenizer, wordnet_bpe)[2] for text in TEXTS]
    student = our_side(s, [a.student for a in aligned], kd.uld_merge)
    teacher = our_side(t, [a.teacher for a in aligned], kd.uld_merge)
    match = VocabMatch.of(smollm2_tokenizer, wordnet_bpe)

    s["logits"].requires_grad_(True)
    ours = uld_loss(student, teacher, kd, match)
    (ours_grad,) = torch.autograd.grad(ours, s["logits"])
    theirs = gold_loss(trl_gold, smollm2_tokenizer, wordnet_bpe, kd, t, s)
    (theirs_grad,) = torch.autograd.grad(theirs, s["logits"])

    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    assert ours.item() > 0.01
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-7, atol=1e-12)
    assert ours_grad.abs().sum() > 0


def test_the_batch_contract_gives_gold_bayesian_without_a_prompt(smollm2_tokenizer, wordnet_bpe, trl_gold):
    # GOLD's "bayesian" merge skips the unscorable leading span when the text starts at position 0,
    # as target_spans does; the batch's labels are the targets of merge=last.
    batch = cross_tokenizer_batch(TEXTS, smollm2_tokenizer, wordnet_bpe)
    assert set(CROSS_TOKENIZER_KEYS) <= set(batch)
    gen = torch.Generator().manual_seed(3)
    s_logits = 4 * torch.randn(
        *batch["input_ids"].shape, len(wordnet_bpe), generator=gen, dtype=torch.float64
    )
    t_logits = 4 * torch.randn(
        *batch["teacher_input_ids"].shape, len(smollm2_tokenizer), generator=gen, dtype=torch.float64
    )
    s_logits.requires_grad_(True)
    kd = KDConfig(divergence="uld_hybrid", uld_merge="last", tau=1.0)
    student = SpanSide(s_logits, batch["labels"].clamp(min=0), batch["student_span"])
    teacher = SpanSide(t_logits, batch["teacher_labels"].clamp(min=0), batch["teacher_span"])
    ours = uld_loss(student, teacher, kd, VocabMatch.of(smollm2_tokenizer, wordnet_bpe))

    def gold(tok, ids, mask, logits) -> dict:
        offs = [o for _, o in trl_gold.encode_with_byte_offsets(tok.backend_tokenizer, TEXTS)]
        offsets = torch.zeros(*ids.shape, 2, dtype=torch.long)
        for b, o in enumerate(offs):
            offsets[b, : len(o)] = torch.tensor(o)
        return {
            "ids": ids,
            "labels": ids.masked_fill(mask == 0, IGNORE_INDEX),
            "offsets": offsets,
            "logits": logits,
        }

    s = gold(wordnet_bpe, batch["input_ids"], batch["attention_mask"], s_logits)
    t = gold(smollm2_tokenizer, batch["teacher_input_ids"], batch["teacher_attention_mask"], t_logits)
    theirs = gold_loss(trl_gold, smollm2_tokenizer, wordnet_bpe, kd, t, s)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    torch.testing.assert_close(
        torch.autograd.grad(ours, s_logits)[0],
        torch.autograd.grad(theirs, s_logits)[0],
        rtol=1e-7,
        atol=1e-12,
    )


def test_matched_tokens_are_the_strings_both_vocabularies_hold(smollm2_tokenizer, wordnet_bpe):
    match = VocabMatch.of(smollm2_tokenizer, wordnet_bpe)
    teacher_strings = smollm2_tokenizer.convert_ids_to_tokens(match.teacher.tolist())
    assert teacher_strings == wordnet_bpe.convert_ids_to_tokens(match.student.tolist())
    assert torch.all(match.teacher[1:] > match.teacher[:-1])
    assert 256 < len(match.teacher) < len(wordnet_bpe)  # every byte, and many (not all) merges
    assert "Ġriver" in teacher_strings


def one_span(probs: list[list[float]], targets: list[int]) -> SpanSide:
    """One sequence whose positions all lie in span 0; logits = log of the given probabilities."""
    logits = torch.tensor(probs, dtype=torch.float64).log().unsqueeze(0).requires_grad_(True)
    return SpanSide(logits, torch.tensor([targets]), torch.zeros(1, len(targets), dtype=torch.long))


def test_uld_of_one_token_each_is_the_l1_of_sorted_probabilities():
    student = one_span([[0.2, 0.5, 0.3]], [0])
    teacher = one_span([[0.4, 0.6]], [0])
    loss = uld_loss(student, teacher, KDConfig(divergence="uld", tau=1.0))
    assert loss.item() == pytest.approx(abs(0.5 - 0.6) + abs(0.3 - 0.4) + abs(0.2 - 0.0))


@pytest.mark.parametrize(("merge", "expected"), [("last", 0.7 + 0.15 + 0.05), ("first", 0.7 + 0.3)])
def test_a_two_token_span_is_merged_as_gold_merges_it(merge, expected):
    # last: p_2 * p_1(target_1) = [.1, .3, .6] * .5; first: p_1 * p_2(target_2) = [.5, .5, 0] * .6
    student = one_span([[0.5, 0.5, 1e-300], [0.1, 0.3, 0.6]], [1, 2])
    teacher = one_span([[1.0 - 2e-12, 1e-12, 1e-12]], [0])
    loss = uld_loss(student, teacher, KDConfig(divergence="uld", uld_merge=merge, tau=1.0))
    assert loss.item() == pytest.approx(expected, abs=1e-9)


def test_uld_ignores_which_token_is_which():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 30, generator=gen, dtype=torch.float64)
    span = torch.tensor([[0, 0, 1, 2, -1], [0, 1, 1, -1, -1]])
    targets = torch.randint(0, 30, (2, 5), generator=gen)
    kd = KDConfig(divergence="uld", uld_merge="last")
    perm = torch.randperm(30, generator=gen)
    same = SpanSide(logits, targets, span)
    permuted = SpanSide(logits[..., perm], torch.argsort(perm)[targets], span)
    assert uld_loss(same, permuted, kd).item() == pytest.approx(0.0, abs=1e-12)
    other = SpanSide(3 * torch.randn(2, 5, 30, generator=gen, dtype=torch.float64), targets, span)
    assert uld_loss(same, other, kd).item() > 0.1


def test_spans_on_one_side_only_and_empty_sequences_count_as_gold_counts_them():
    gen = torch.Generator().manual_seed(2)
    s_logits = torch.randn(2, 4, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    t_logits = torch.randn(2, 3, 9, generator=gen, dtype=torch.float64)
    targets_s, targets_t = torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)
    student = SpanSide(s_logits, targets_s, torch.tensor([[0, 1, 1, 2], [-1, -1, -1, -1]]))
    teacher = SpanSide(t_logits, targets_t, torch.tensor([[0, 1, -1], [0, -1, -1]]))  # no span 2
    kd = KDConfig(divergence="uld")
    per_span, seq = span_losses(student, teacher, kd)
    assert seq.tolist() == [0, 0]
    assert uld_loss(student, teacher, kd).item() == pytest.approx(per_span.sum().item() / 2 / 2)
    empty = SpanSide(s_logits, targets_s, torch.full((2, 4), -1))
    loss = uld_loss(empty, teacher, kd)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert s_logits.grad is not None and torch.all(s_logits.grad == 0)


def test_bf16_logits_are_compared_in_float32():
    gen = torch.Generator().manual_seed(4)
    span = torch.tensor([[0, 0, 1, 2, -1]])
    targets = torch.randint(0, 40, (1, 5), generator=gen)
    s, t = (4 * torch.randn(1, 5, n, generator=gen) for n in (40, 60))
    kd = KDConfig(divergence="uld", tau=1.0)
    half = uld_loss(SpanSide(s.bfloat16(), targets, span), SpanSide(t.bfloat16(), targets, span), kd)
    full = uld_loss(
        SpanSide(s.bfloat16().float(), targets, span), SpanSide(t.bfloat16().float(), targets, span), kd
    )
    assert half.dtype == torch.float32 and half.item() == full.item()


def test_per_position_divergences_refuse_uld():
    logits = torch.randn(2, 5)
    with pytest.raises(DSKDError, match="aligned text spans"):
        divergence_per_position(logits, logits, kd=KDConfig(divergence="uld", tau=1.0))


def test_the_hybrid_needs_the_matched_tokens():
    side = one_span([[0.5, 0.5]], [0])
    with pytest.raises(DSKDError, match="VocabMatch"):
        uld_loss(side, side, KDConfig(divergence="uld_hybrid"))


def test_the_hybrid_refuses_matched_ids_past_the_logits():
    side = one_span([[0.5, 0.5]], [0])
    match = VocabMatch(torch.tensor([0, 5]), torch.tensor([1, 0]))
    with pytest.raises(DSKDError, match="past the logits"):
        uld_loss(side, side, KDConfig(divergence="uld_hybrid"), match)


def test_the_hybrid_weights_are_set_together():
    with pytest.raises(ConfigError, match="set together"):
        KDConfig(divergence="uld_hybrid", uld_matched_weight=0.5)
    with pytest.raises(ConfigError, match="uld_merge"):
        load_config(os.path.join(REPO, "experiments/tiny/kd.yaml"), ["loss.kd.uld_merge=middle"])


def test_the_config_accepts_uld_online_without_packing_and_refuses_it_cached():
    tiny = os.path.join(REPO, "experiments/tiny/kd.yaml")
    cfg = load_config(tiny, ["teacher.mode=online", "loss.kd.divergence=uld", "data.pack=false"])
    assert cfg.loss.kd.divergence == "uld"
    with pytest.raises(ConfigError, match="cannot read the teacher cache"):
        load_config(tiny, ["teacher.mode=cached", "loss.kd.divergence=uld_hybrid"])
    with pytest.raises(ConfigError, match="needs data.pack=false"):
        load_config(tiny, ["teacher.mode=online", "loss.kd.divergence=uld"])
