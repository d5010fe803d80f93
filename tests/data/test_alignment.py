"""Cross-tokenizer span alignment: the real SmolLM2 tokenizer against the project's WordNet BPE."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerFast

from dskd.assets import asset_path
from dskd.core.batch import CROSS_TOKENIZER_KEYS, IGNORE_INDEX
from dskd.data.alignment import (
    AlignmentError,
    align,
    align_text,
    byte_spans,
    cross_tokenizer_batch,
    encode,
    target_spans,
)
from dskd.data.bpe import corpus_texts

TEXTS = [
    "the banks  of   the river",
    "naïve café 😀 日本語\n\n tab\there",
    "  leading and trailing spaces  ",
    "a\u00a0non-breaking space, ‘quotes’ — and an ellipsis…",
    "emoji runs 😀😀👍🏽 and e\u0301 combining accents",
]


def corpus_sample(n: int = 150) -> list[str]:
    return list(itertools.islice(corpus_texts(asset_path("wordnet-corpus")), 0, 150_000, 150_000 // n))


def check_partition(text: str, t, s, al, max_tokens: int | None = None) -> None:
    """Each span's teacher tokens and student tokens spell the same bytes, the spans tile the text
    from byte 0 to the last shared cut, and only tokens past that cut are unaligned."""
    data = text.encode("utf-8")
    assert np.all(np.diff(al.cuts) > 0)
    start = 0
    for k, (tg, sg) in enumerate(al.groups()):
        piece = data[start : al.cuts[k]]
        assert tg and sg
        assert b"".join(data[a:b] for a, b in t.spans[tg]) == piece
        assert b"".join(data[a:b] for a, b in s.spans[sg]) == piece
        assert tg == list(range(tg[0], tg[-1] + 1)) and sg == list(range(sg[0], sg[-1] + 1))
        start = int(al.cuts[k])
    last = al.cuts[-1] if al.n_spans else 0
    assert np.array_equal(al.teacher == -1, t.spans[:, 1] > last)
    assert np.array_equal(al.student == -1, s.spans[:, 1] > last)
    if max_tokens is None:
        assert last == len(data)


@pytest.mark.parametrize("text", TEXTS)
def test_spans_equal_gold_groups_on_hard_text(text, smollm2_tokenizer, wordnet_bpe, trl_gold):
    t, s, al = align_text(text, smollm2_tokenizer, wordnet_bpe)
    [(t_ids, t_off)] = trl_gold.encode_with_byte_offsets(smollm2_tokenizer.backend_tokenizer, [text])
    [(s_ids, s_off)] = trl_gold.encode_with_byte_offsets(wordnet_bpe.backend_tokenizer, [text])
    assert (t.ids.tolist(), s.ids.tolist()) == (t_ids, s_ids)
    assert [tuple(x) for x in t.spans.tolist()] == t_off
    assert [tuple(x) for x in s.spans.tolist()] == s_off
    s_groups, t_groups = trl_gold.ULDLoss._align_by_byte_offsets(s_off, t_off)
    assert al.groups() == list(zip(t_groups, s_groups, strict=True))
    check_partition(text, t, s, al)


def test_whitespace_runs_are_grouped_where_the_splits_differ(smollm2_tokenizer, wordnet_bpe):
    t, s, al = align_text("the banks  of   the river", smollm2_tokenizer, wordnet_bpe)
    pieces = [
        (
            smollm2_tokenizer.convert_ids_to_tokens(t.ids[tg].tolist()),
            wordnet_bpe.convert_ids_to_tokens(s.ids[sg].tolist()),
        )
        for tg, sg in al.groups()
    ]
    assert pieces[4] == (["ĠĠ"], ["Ġ", "Ġ"])
    assert al.n_spans == 7


def test_a_split_emoji_is_one_span_unless_both_split_it_alike(smollm2_tokenizer, wordnet_bpe):
    text = "naïve café 😀 日本語"
    t, s, al = align_text(text, smollm2_tokenizer, wordnet_bpe)
    emoji = text.encode().index("😀".encode())
    # SmolLM2 cuts " 😀" after its 3rd byte, the BPE after each byte: a shared cut inside the character
    assert emoji + 3 in al.cuts and emoji + 4 in al.cuts
    assert emoji + 1 not in al.cuts


def test_spans_partition_the_text_of_real_documents(smollm2_tokenizer, wordnet_bpe):
    multi = 0
    for text in corpus_sample():
        t, s, al = align_text(text, smollm2_tokenizer, wordnet_bpe)
        check_partition(text, t, s, al)
        multi += int(np.any(np.bincount(al.student[al.student >= 0]) > 1))
    assert multi > 50  # the two tokenizers really differ on most documents


@pytest.mark.parametrize("max_tokens", [1, 5, 12])
def test_truncation_leaves_the_tail_one_side_lacks_unaligned(max_tokens, smollm2_tokenizer, wordnet_bpe):
    text = "Photosynthesis converts light energy into chemical energy stored in glucose molecules."
    t, s, al = align_text(text, smollm2_tokenizer, wordnet_bpe, max_tokens=max_tokens)
    assert len(t.ids) == len(s.ids) == max_tokens
    covered = min(t.spans[-1, 1], s.spans[-1, 1])
    assert (al.cuts[-1] if al.n_spans else 0) <= covered
    check_partition(text, t, s, al, max_tokens)
    assert (al.teacher == -1).any() or (al.student == -1).any()


def test_specials_are_zero_width_and_unaligned(smollm2_tokenizer, wordnet_bpe):
    text = "a river bank"
    t_ids = [
        smollm2_tokenizer.eos_token_id,
        *encode(smollm2_tokenizer, text).ids.tolist(),
        smollm2_tokenizer.eos_token_id,
    ]
    s_ids = [*encode(wordnet_bpe, text).ids.tolist(), wordnet_bpe.eos_token_id]
    t_spans, s_spans = byte_spans(smollm2_tokenizer, t_ids, text), byte_spans(wordnet_bpe, s_ids, text)
    assert t_spans[0].tolist() == [0, 0] and t_spans[-1].tolist() == [12, 12]
    al = align(t_spans, s_spans)
    assert al.teacher[0] == al.teacher[-1] == al.student[-1] == -1
    assert al.cuts[-1] == len(text)


def test_hand_made_spans():
    teacher = np.array([[0, 3], [3, 5], [5, 9]])
    student = np.array([[0, 1], [1, 5], [5, 7], [7, 9]])
    al = align(teacher, student)
    assert al.cuts.tolist() == [5, 9]
    assert al.teacher.tolist() == [0, 0, 1] and al.student.tolist() == [0, 0, 1, 1]
    truncated = align(teacher, student[:3])  # the student stops at byte 7, inside the teacher's last token
    assert truncated.cuts.tolist() == [5] and truncated.teacher.tolist() == [0, 0, -1]
    assert truncated.student.tolist() == [0, 0, -1]


def test_a_tokenizer_that_adds_a_prefix_space_is_refused(wordnet_bpe):
    backend = wordnet_bpe.backend_tokenizer
    prefixed = PreTrainedTokenizerFast(tokenizer_object=type(backend).from_str(backend.to_str()))
    prefixed.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    with pytest.raises(AlignmentError, match="do not spell the text at byte 0"):
        encode(prefixed, "river bank")


def test_target_spans_keep_only_spans_whose_every_token_is_predicted(smollm2_tokenizer, wordnet_bpe):
    for text in TEXTS:
        t, s, al = align_text(text, smollm2_tokenizer, wordnet_bpe)
        for token_span in (al.teacher, al.student):
            on_targets = target_spans(token_span)
            assert on_targets[-1] == -1 and 0 not in on_targets
            for k in set(on_targets[on_targets >= 0].tolist()):
                predicted = np.flatnonzero(on_targets == k) + 1  # the tokens those positions predict
                assert predicted.tolist() == np.flatnonzero(token_span == k).tolist()
        assert set(target_spans(al.teacher).tolist()) == set(target_spans(al.student).tolist())


def test_target_spans_by_hand():
    assert target_spans(np.array([0, 0, 1, 2, 2, -1])).tolist() == [-1, 1, 2, 2, -1, -1]
    assert target_spans(np.array([-1, 0, 1, 1])).tolist() == [0, 1, 1, -1]  # a BOS predicts span 0


def test_a_batch_holds_both_tokenizations_and_the_same_spans_on_both_sides(smollm2_tokenizer, wordnet_bpe):
    batch = cross_tokenizer_batch(TEXTS, smollm2_tokenizer, wordnet_bpe, seq_len=12)
    assert set(batch) == {"input_ids", "attention_mask", "labels", *CROSS_TOKENIZER_KEYS}
    for side in ("", "teacher_"):
        ids, mask, labels = batch[f"{side}input_ids"], batch[f"{side}attention_mask"], batch[f"{side}labels"]
        assert ids.shape[0] == len(TEXTS) and ids.shape[1] <= 12 and ids.dtype == torch.long
        inner = mask[:, 1:].bool()
        assert torch.equal(labels[:, :-1][inner], ids[:, 1:][inner])
        assert (labels[mask == 0] == IGNORE_INDEX).all()
    for b in range(len(TEXTS)):
        teacher = set(batch["teacher_span"][b].tolist()) - {-1}
        student = set(batch["student_span"][b].tolist()) - {-1}
        assert teacher == student and len(teacher) > 0
        for side in ("teacher_", ""):
            spans = batch["teacher_span" if side else "student_span"][b]
            assert (batch[f"{side}labels"][b][spans >= 0] != IGNORE_INDEX).all()
