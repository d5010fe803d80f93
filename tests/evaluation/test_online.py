"""The paper tasks end to end on the rehearsal's offline stand-ins (read through DSKD_HUB_MIRROR): chat
prompts of the stand-in tokenizer, a tiny random model, scores that do not depend on the batch size."""

from __future__ import annotations

import pytest

from dskd.corpora.sources import HUB_MIRROR
from dskd.evaluation.config import EvalConfig
from dskd.evaluation.online import score_online


@pytest.fixture(scope="module")
def offline_paper(tmp_path_factory):
    import torch
    from transformers import LlamaForCausalLM

    from dskd.launch.reproduce import preset_configs
    from dskd.testing.fixtures import llama_config
    from dskd.testing.standins import hub_datasets, standin_tokenizer, write_hub_mirror

    root = tmp_path_factory.mktemp("hub")
    write_hub_mirror(root, hub_datasets(preset_configs("paper-llama3", [0], [])), train=12, held_out=6)
    tok = standin_tokenizer(root, vocab_size=512)
    config = llama_config(len(tok), 32, 2, max_len=4096)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    return root, LlamaForCausalLM(config).eval(), tok


@pytest.mark.parametrize("task", ["arc_challenge", "mmlu", "squad_v2"])
def test_paper_scores_do_not_depend_on_the_batch_size(offline_paper, monkeypatch, task):
    root, model, tok = offline_paper
    monkeypatch.setenv(HUB_MIRROR, str(root))
    one = score_online(f"paper/{task}", model, tok, EvalConfig(max_items=5, batch_size=1))
    many = score_online(f"paper/{task}", model, tok, EvalConfig(max_items=5, batch_size=4))
    assert [(s.metric, s.value, s.items) for s in one] == [(s.metric, s.value, s.items) for s in many]
    metrics = {s.metric: s for s in one}
    if task == "squad_v2":
        assert set(metrics) == {"f1"} and len(metrics["f1"].items) == 5
    else:
        main, letters = ("macro_acc", "macro_letter_acc") if task == "mmlu" else ("exact_match", "letter_acc")
        assert set(metrics) == {main, letters} and metrics[main].in_table and not metrics[letters].in_table
        assert all(0 <= s.value <= 1 and s.n_items == 5 for s in one)
