"""A real offline lm-eval run on the analogy task with the real teacher, against our own scoring."""

from __future__ import annotations

import os

import pytest
import torch

from dskd.evaluation.analogy import build_analogy, read_questions
from dskd.evaluation.lm_eval_tasks import MCItem, chance_level, run_lm_eval, write_task

pytestmark = pytest.mark.integration


def _loglik_choice(model, tok, item: MCItem) -> int:
    """Independent reference: argmax over choices of the summed log-prob of ' choice' after the query."""
    totals = []
    for choice in item.choices:
        ctx = tok(item.query)["input_ids"]
        full = tok(item.query + " " + choice)["input_ids"]
        assert full[: len(ctx)] == ctx  # the query's tokens are a prefix (lm-eval splits the same way here)
        with torch.no_grad():
            logp = model(torch.tensor([full])).logits[0, :-1].log_softmax(-1)
        cont = torch.tensor(full[len(ctx) :])
        totals.append(float(logp[len(ctx) - 1 :].gather(-1, cont[:, None]).sum()))
    return max(range(len(totals)), key=totals.__getitem__)


@pytest.mark.parametrize("local_rank", [None, "1"])  # "1": the second process of a launcher's job
def test_analogy_task_runs_offline_and_matches_reference(tmp_path, smollm2_dir, local_rank, monkeypatch):
    from dskd.assets import asset_path
    from dskd.models.loading import load_causal_lm, load_tokenizer

    questions = read_questions(asset_path("analogies") / "questions-words.txt")
    items = build_analogy(questions, max_items=4, seed=0)
    assert len(items) == 4 and all(0 <= i.gold < len(i.choices) for i in items)
    assert chance_level(items) == 0.25
    name = write_task("analogy", items, tmp_path)
    model, tok = load_causal_lm(smollm2_dir, "float32"), load_tokenizer(smollm2_dir)
    if local_rank is not None:  # lm-eval returned no results where LOCAL_RANK is not 0
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    (score,) = run_lm_eval(model, tok, [name], tmp_path, batch_size=4)
    assert os.environ.get("LOCAL_RANK") == local_rank
    assert score.n_items == 4 and score.n_requests == sum(len(i.choices) for i in items)
    expected = [float(_loglik_choice(model, tok, i) == i.gold) for i in items]
    assert score.correct == expected  # per item, in the order of the items
    assert score.acc == pytest.approx(sum(expected) / 4)
