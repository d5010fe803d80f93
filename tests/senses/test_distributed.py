"""Two gloo processes gather interleaved shards; the merged reservoir is the one-process sample: the
same rows (priorities hash corpus positions), the same counts, tokens and corpus fingerprint."""

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

    from dskd.senses.gather import GatherSettings, gather, merge_across_ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    settings = GatherSettings(keying="observed", max_length=32, batch_tokens=128, cap_per_source=2)
    res = gather(_model(), tok, [TEXTS], settings, (rank, world), progress=False)
    own = res.tokens
    merged = merge_across_ranks(res)
    if rank == 0:
        keys, counts, rows = merged.reservoirs[0].grouped()
        torch.save(
            {"keys": keys, "counts": counts, "rows": rows, "occ": merged.occurrences, "tokens": merged.tokens,
             "fingerprint": merged.fingerprint, "own": own},
            out,
        )  # fmt: skip
    dist.destroy_process_group()


@pytest.mark.integration
def test_two_ranks_merge_to_the_capped_union(smollm2_dir, tmp_path):
    from transformers import AutoTokenizer

    from dskd.senses.gather import GatherSettings, gather

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "merged.pt")
    mp.start_processes(_worker, args=(2, port, str(smollm2_dir), out), nprocs=2, start_method="spawn")
    merged = torch.load(out)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    settings = GatherSettings(keying="observed", max_length=32, batch_tokens=128, cap_per_source=2)
    one = gather(_model(), tok, [TEXTS], settings, progress=False)
    keys, counts, rows = one.reservoirs[0].grouped()
    assert 0 < merged["own"] < merged["tokens"] == one.tokens  # rank 0 read only its shard
    assert merged["fingerprint"] == one.fingerprint != 0
    torch.testing.assert_close(merged["rows"], rows, rtol=0, atol=1e-5)  # the very rows one process keeps
    assert torch.equal(merged["occ"], one.occurrences)
    assert torch.equal(merged["keys"], keys)
    occ = one.occurrences[keys]
    assert torch.equal(merged["counts"], occ.clamp(max=2)) and torch.equal(counts, occ.clamp(max=2))


LAUNCHERS = {
    "torchrun": lambda rank, port: {
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
        "LOCAL_RANK": str(rank),
    },
    "srun": lambda rank, port: {
        "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "dskd",
        "MASTER_PORT": str(port),
    },
}  # fmt: skip
"""The variables each launcher gives its processes (srun: what Lightning's SLURM environment reads)."""


def _build_rank(rank: int, port: int, cfg, launcher: str) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        os.environ.pop(name, None)
    os.environ.update(LAUNCHERS[launcher](rank, port))
    import torch.distributed as dist

    from dskd.core.devices import launcher_group
    from dskd.senses.build import build

    with launcher_group() as together:
        assert together and dist.get_rank() == rank and dist.get_world_size() == 2
        out, stats = build(cfg, progress=False, together=True)
    assert not dist.is_initialized()  # the build left no process group behind for training to trip on
    assert (out / "senses.safetensors").is_file()  # every rank returns once the dictionary is written
    assert bool(stats) == (rank == 0)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_two_process_build_writes_the_one_process_dictionary(tmp_path, launcher):
    """`dskd senses build` in two processes started by torchrun or srun: the same dictionary as one."""
    from dskd.config.schema import ExperimentConfig
    from dskd.corpora.config import SourceConfig
    from dskd.senses.build import build
    from dskd.senses.dictionary import SenseDictionary
    from dskd.testing.fixtures import llama_config, random_model_dir

    config = llama_config(40, 32, 2, max_len=64)
    config.initializer_range = 0.3
    teacher = random_model_dir(tmp_path / "teacher", config)
    lines = [" ".join(f"t{3 + (11 * i + 5 * j) % 37}" for j in range(4 + i % 9)) for i in range(60)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(lines))
    cfg = ExperimentConfig(method="kd", artifacts_dir=str(tmp_path / "artifacts"))
    cfg.teacher.model, cfg.teacher.dtype = str(teacher), "float32"
    cfg.senses.sources = [SourceConfig(kind="text", path=str(tmp_path / "corpus.txt"))]
    cfg.senses.compose_vids, cfg.senses.k, cfg.senses.cap_per_source = False, 2, 3
    cfg.senses.max_length, cfg.senses.batch_size = 8, 3
    cfg.senses.output_dir = str(tmp_path / "two")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_build_rank, args=(port, cfg, launcher), nprocs=2, start_method="spawn")
    cfg.senses.output_dir = str(tmp_path / "one")
    _, stats = build(cfg, progress=False)
    one, two = (SenseDictionary.load(tmp_path / n, device="cpu") for n in ("one", "two"))
    assert stats["world_size"] == 1 and stats["token_keys"] > 10
    assert torch.equal(one.key_ids, two.key_ids) and torch.equal(one.counts, two.counts)
    torch.testing.assert_close(one.rows, two.rows, rtol=0, atol=1e-4)
    assert one.meta["corpus_fingerprint"] == two.meta["corpus_fingerprint"]
    assert (tmp_path / "one" / "stats.json").read_text().count('"tokens_processed"') == 1
