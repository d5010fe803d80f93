"""Keyed teacher hidden states on a tiny random Llama, checked against a plain forward by hand."""

import torch
from transformers import LlamaForCausalLM

from dskd.senses.gather import keyed_states, length_sorted_batches, token_windows


def _model(tiny_llama_config) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(vocab_size=50, hidden_size=16, num_layers=2)).eval()


def test_hidden_state_is_the_lm_head_input(tiny_llama_config):
    model = _model(tiny_llama_config)
    ids = torch.randint(0, 50, (2, 6))
    out = model(ids, output_hidden_states=True, use_cache=False)
    kd = keyed_states(model, ids, torch.ones_like(ids), "observed")
    assert torch.allclose(model.lm_head(kd.rows), out.logits[:, :-1].reshape(-1, 50), atol=1e-5)
    assert torch.allclose(kd.rows, out.hidden_states[-1][:, :-1].reshape(-1, 16), atol=1e-6)


def test_predicted_and_observed_keys_by_hand(tiny_llama_config):
    model = _model(tiny_llama_config)
    ids = torch.tensor([[5, 9, 13, 2, 7], [8, 3, 11, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    obs = keyed_states(model, ids, mask, "observed")
    pred = keyed_states(model, ids, mask, "predicted")
    # positions with a next token: row 0 -> p = 0..3, row 1 -> p = 0..1
    assert obs.keys.tolist() == [9, 13, 2, 7, 3, 11]
    assert torch.equal(pred.observed, obs.observed) and torch.equal(pred.rows, obs.rows)
    expected = []
    for seq in ([5, 9, 13, 2, 7], [8, 3, 11]):
        logits = model(torch.tensor([seq])).logits[0]  # unpadded forward of each sequence alone
        expected += logits[:-1].argmax(-1).tolist()
    assert pred.keys.tolist() == expected
    alone = model.model(torch.tensor([[8, 3, 11]])).last_hidden_state[0, :2]
    assert torch.allclose(pred.rows[4:], alone, atol=1e-5)  # right padding does not change the states


def test_windows_and_length_sorted_batches():
    assert list(token_windows(list(range(7)), 3)) == [[0, 1, 2], [3, 4, 5]]  # a 1-token tail has no target
    seqs = [([1] * n, f"s{i}") for i, n in enumerate((5, 2, 9, 3, 2))]
    batches = list(length_sorted_batches(seqs, max_tokens=10, pad_id=0, pool=4))
    lengths = [m.sum(1).tolist() for _, m, _ in batches]
    assert lengths == [[2, 3], [5], [9], [2]]  # pool of 4 sorted; the 5th sequence forms its own pool
    assert [tags for _, _, tags in batches] == [["s1", "s3"], ["s0"], ["s2"], ["s4"]]  # rows' tags
    for ids, m, _ in batches:
        assert ids.numel() <= 10 or ids.shape[0] == 1
        assert torch.equal(ids, m)  # tokens are 1, padding 0


def test_position_priorities_depend_on_the_position_only():
    from dskd.senses.gather import position_priorities

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    a = position_priorities(7, 0, [(4, 0), (9, 256)], mask)
    assert a.shape == (5,) and a.dtype == torch.float64 and bool(((a >= 0) & (a < 1)).all())
    b = position_priorities(7, 0, [(9, 256)], torch.tensor([[1, 1, 1, 1]]))  # the same window, alone
    assert torch.equal(a[2:], b)
    c = position_priorities(7, 0, [(9, 256)], torch.tensor([[1, 1, 0, 0]]))  # a shorter copy of it
    assert torch.equal(c, b[:1])
    assert len({*a.tolist(), *position_priorities(8, 0, [(4, 0)], mask[:1]).tolist()}) == 7  # seed
    assert not torch.equal(position_priorities(7, 1, [(4, 0)], mask[:1]), a[:2])  # source
    many = position_priorities(0, 0, [(d, 0) for d in range(500)], torch.ones(500, 21, dtype=torch.long))
    assert abs(float(many.mean()) - 0.5) < 0.01 and len(set(many.tolist())) == 10_000  # ~uniform, distinct
