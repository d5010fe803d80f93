"""`dskd eval` in two processes (torchrun's variables, gloo): the models are dealt to the ranks and
rank 0 writes the results a single process writes."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch.multiprocessing as mp

from dskd.config.schema import ExperimentConfig


def _models(root, smollm2_dir) -> dict[str, str]:
    """A tiny random teacher and two students with the real tokenizer (held-out text needs real ids)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from dskd.testing.fixtures import llama_config

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    out = {}
    for seed, name in enumerate(("teacher", "KD@0", "DSKD@0")):
        folder = root / name.replace("@", "-")
        torch.manual_seed(seed)
        LlamaForCausalLM(llama_config(len(tok), 16, 1, max_len=64)).save_pretrained(folder)
        tok.save_pretrained(folder)
        out[name] = str(folder)
    return out


def _config(models: dict[str, str], out_dir) -> ExperimentConfig:
    cfg = ExperimentConfig(method="kd")
    cfg.teacher.model, cfg.teacher.dtype = models["teacher"], "float32"
    cfg.eval.tasks, cfg.eval.heldout_blocks, cfg.eval.heldout_block_len = ["heldout"], 4, 16
    cfg.eval.plot, cfg.eval.output_dir, cfg.logging.wandb = False, str(out_dir), False
    return cfg


def _rank(rank: int, port: int, models: dict[str, str], out_dir: str, log: str) -> None:
    for name in ("SLURM_NTASKS", "SLURM_PROCID"):
        os.environ.pop(name, None)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    import dskd.evaluation.run as run
    import dskd.models.shared as shared
    from dskd.core.devices import launcher_group
    from dskd.evaluation.run import evaluate

    loaded, load = [], run.load_causal_lm

    def logged(spec, *args, **kwargs):
        loaded.append(spec)
        return load(spec, *args, **kwargs)

    run.load_causal_lm = logged  # the names the evaluation (students) and the held teacher load with
    shared.load_causal_lm = logged
    with launcher_group() as together:
        records = evaluate(_config(models, out_dir), models, together=together)
        loaded_together = list(loaded)
        alone = None
        if rank == 0:  # as `dskd reproduce`'s first process after training: alone, inside the group
            alone = evaluate(_config(models, out_dir + "-alone"), models)
    with open(f"{log}-{rank}.json", "w") as f:
        json.dump({"loaded": loaded_together, "records": records, "alone": alone}, f)


@pytest.mark.integration  # the Shakespeare asset and the SmolLM2 tokenizer
def test_two_processes_write_the_one_process_results(tmp_path, smollm2_dir):
    from dskd.evaluation.run import evaluate

    models = _models(tmp_path, smollm2_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = str(tmp_path / "rank")
    mp.start_processes(_rank, args=(port, models, str(tmp_path / "two"), log), nprocs=2, start_method="spawn")
    ranks = [json.loads(open(f"{log}-{r}.json").read()) for r in (0, 1)]
    assert [r["loaded"] for r in ranks] == [
        [models["teacher"], models["DSKD@0"]],  # rank 0: the teacher (also for the KL) and model 2
        [models["teacher"], models["KD@0"]],  # rank 1: model 1 (and the teacher for its KL)
    ]
    one = evaluate(_config(models, tmp_path / "one"), models)
    two = json.loads((tmp_path / "two" / "results.json").read_text())["results"]
    assert ranks[0]["records"] == ranks[1]["records"] == two  # every rank returns what rank 0 wrote
    assert [(r["model"], r["metric"]) for r in two] == [(r["model"], r["metric"]) for r in one]
    alone = ranks[0]["alone"]  # evaluating alone inside the group: every model, no collective
    assert [(r["model"], r["metric"]) for r in alone] == [(r["model"], r["metric"]) for r in one]
    for a, b, c in zip(one, two, alone):
        for x in (b, c):
            assert x["value"] == pytest.approx(a["value"], rel=1e-6)
            assert x["items"] == pytest.approx(a["items"])
    assert {r["model"] for r in two} == {"teacher", "KD", "DSKD"}
    assert (tmp_path / "two" / "table.md").read_text().count("DSKD") >= 1
