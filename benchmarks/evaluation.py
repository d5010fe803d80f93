"""Benchmark: the paper protocol's batched scoring and greedy generation vs one prompt at a time.

The real teacher (SmolLM2-135M-Instruct, the default asset) on 5-shot chat prompts of gloss-selection
questions from the WordNet corpus (the ``wsd`` items: an example sentence and three glosses of its word;
rendered as training and the paper evaluation render QA prompts, about as long as the 5-shot BIG-bench
social_iqa prompts this benchmark used before that asset went away), on this process's
device (``eval.device=auto``: the GPU where there is one, else the CPU). Both sides run in
the same process on the same prompts, one after the other: ``eval.batch_size`` 8 against 1. The two
must also agree (greedy tokens identical); a disagreement fails the benchmark.
"""

from __future__ import annotations

import time

from benchmarks.harness import Figure

BATCH = 8
SHOTS, CHOICES = 5, 3


def _prompts(tokenizer, n: int) -> list[str]:
    """``n`` 5-shot chat prompts of WordNet gloss-selection questions, exemplars drawn (seeded) from the
    first :data:`~dskd.corpora.prompts.EXEMPLAR_POOL` questions."""
    from dskd.assets import asset_path, wordnet
    from dskd.corpora.prompts import EXEMPLAR_POOL, LETTERS, QAItem, draw_exemplars, prompt_and_answer
    from dskd.evaluation.wic import read_examples
    from dskd.evaluation.wsd import build_wsd

    examples = read_examples(asset_path("wordnet-corpus") / "examples.jsonl")
    pool = [
        QAItem(m.query, m.choices, LETTERS[m.gold])
        for m in build_wsd(examples, wordnet(), max(n, EXEMPLAR_POOL), CHOICES, seed=0)
    ]
    return [
        prompt_and_answer(q, draw_exemplars(pool, i, SHOTS, 0), tokenizer)[0] for i, q in enumerate(pool[:n])
    ]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_paper_batching(quick: bool) -> list[Figure]:
    import torch

    from dskd.core.devices import local_device
    from dskd.evaluation import paper_protocol as pp
    from dskd.models.loading import load_causal_lm, load_tokenizer

    device = local_device()  # this process's GPU where there is one (eval.device=auto), else the CPU
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    model = load_causal_lm("smollm2-135m-instruct", "float32", device=device)
    prompts = _prompts(tokenizer, 8 if quick else 16)
    tokens = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    letters = [pp.letter_tokens(tokenizer, 4)] * len(prompts)
    pp.next_token_scores(model, tokenizer, prompts[:2], letters[:2], BATCH)  # warm-up
    figures = []
    with torch.inference_mode():
        (g1, s1), t_one = _timed(lambda: pp.next_token_scores(model, tokenizer, prompts, letters, 1))
        (g8, s8), t_batch = _timed(lambda: pp.next_token_scores(model, tokenizer, prompts, letters, BATCH))
        if g1 != g8 or not torch.allclose(torch.tensor(s1), torch.tensor(s8), atol=1e-4):
            raise AssertionError("batched next-token scores differ from one prompt at a time")
        average = tokens / len(prompts)
        note = (
            f"{len(prompts)} 5-shot chat prompts (WordNet gloss selection), {average:.0f} tokens on average, "
            f"fp32, on {device}"
        )
        figures.append(
            Figure("eval: paper MC scoring, batch 8", len(prompts) / t_batch, "prompts/s",
                   len(prompts) / t_one, "one prompt at a time", note=note)
        )  # fmt: skip
        gen1, t_one = _timed(lambda: pp.greedy_texts(model, tokenizer, prompts, 10, 1))
        gen8, t_batch = _timed(lambda: pp.greedy_texts(model, tokenizer, prompts, 10, BATCH))
        if gen1 != gen8:
            raise AssertionError("batched greedy generation differs from one prompt at a time")
        figures.append(
            Figure("eval: paper greedy generation (10 tokens), batch 8", len(prompts) / t_batch, "prompts/s",
                   len(prompts) / t_one, "one prompt at a time", note=note)
        )  # fmt: skip
    return figures
