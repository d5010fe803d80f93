"""Two gloo processes gather interleaved shards; the merged reservoir is the one-pass sample."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

TEXTS = [f"word {i} and word {i % 3} then {i % 5} again" for i in range(24)]


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _worker(rank: int, world: int, port: int, tok_dir: str, out: str) -> None:
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from dskd.senses.build import gather, merge_across_ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    res = gather(_model(), tok, [TEXTS], keying="observed", max_length=32, batch_tokens=128,
                 cap_per_source=2, rank=rank, world=world, progress=False)  # fmt: skip
    merged = merge_across_ranks(res)
    if rank == 0:
        keys, counts, rows = merged.reservoirs[0].grouped()
        torch.save({"keys": keys, "counts": counts, "occ": merged.occurrences, "tokens": merged.tokens}, out)
    dist.destroy_process_group()


@pytest.mark.integration
def test_two_ranks_merge_to_the_capped_union(smollm2_dir, tmp_path):
    from transformers import AutoTokenizer

    from dskd.senses.build import gather

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "merged.pt")
    mp.start_processes(_worker, args=(2, port, str(smollm2_dir), out), nprocs=2, start_method="spawn")
    merged = torch.load(out)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    one = gather(_model(), tok, [TEXTS], keying="observed", max_length=32, batch_tokens=128,
                 cap_per_source=2, progress=False)  # fmt: skip
    keys, counts, _ = one.reservoirs[0].grouped()
    assert merged["tokens"] == one.tokens
    assert torch.equal(merged["occ"], one.occurrences)
    assert torch.equal(merged["keys"], keys)
    occ = one.occurrences[keys]
    assert torch.equal(merged["counts"], occ.clamp(max=2)) and torch.equal(counts, occ.clamp(max=2))
