"""scripts/gpu_check.py's bookkeeping (the checks themselves need GPUs: `make gpu-check`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dskd.core.batch import IGNORE_INDEX
from dskd.senses import SenseDictionary
from dskd.testing.fixtures import SyntheticBatches, random_senses

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mfu_is_the_median_device_flops_over_the_peak(gpu_check):
    rows = [{"train/device/flops_per_sec": v} for v in ("1e12", "3e12", "2e12")] + [{"train/loss": "1"}]
    assert gpu_check._mfu(rows, peak_tflops=100.0) == pytest.approx(0.02)
    assert gpu_check._mfu([{"train/loss": "1"}], peak_tflops=100.0) is None


def test_stage_seconds_come_from_the_first_done_line(gpu_check):
    out = "=== lexicon: done in 3.5 s\n=== senses: done in 1.0 s\n=== lexicon: done in 9.0 s\nother\n"
    assert gpu_check._stage_seconds(out) == {"lexicon": 3.5, "senses": 1.0}


def test_every_check_is_listed_rehearsals_first(gpu_check, capsys):
    assert gpu_check.main(["--list"]) == 0
    names = capsys.readouterr().out.split()
    assert names[:2] == ["rehearse-paper-llama3", "rehearse-paper-mistral"] and "fsdp-bf16-mixed" in names


def test_the_paper_step_trains_the_preset_on_a_cpu_with_a_held_random_teacher(gpu_check, tmp_path, capsys):
    argv = ["--accelerator", "cpu", "--tiny", "--only", "paper-step", "--steps", "2", "--work", str(tmp_path)]
    assert gpu_check.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    record = next(r for r in lines if r.get("check") == "paper-step")
    assert record["ok"] and record["steps"] == 2 and record["tokens_per_s"] > 0
    assert record["first_loss"] > 0 and record["last_loss"] > 0
    assert record["peak_mem_gib"] is None and record["peak_over_estimate"] is None  # no CUDA peak on a CPU
    assert record["estimate_tensors_gb"] == pytest.approx(record["estimate_gb"] - 3.0)
    assert not (tmp_path / "teacher").exists()  # only the throughput checks need the shared teacher
    assert not list((tmp_path / "paper-step" / "teacher").glob("*.safetensors"))  # weights made in memory
    config = json.loads((tmp_path / "paper-step" / "teacher" / "config.json").read_text())
    assert config["num_hidden_layers"] == 32 and config["num_key_value_heads"] == 1


def test_the_paper_step_dictionary_has_rows_for_every_key_its_batches_look_up(gpu_check, tmp_path):
    data = SyntheticBatches(1000, n=3, val=0, batch=2, seq=32, positions=5, neighbours=4)
    keys = gpu_check._step_keys(data)
    senses = SenseDictionary.load(random_senses(tmp_path, 1000, 8, k=3, keys=keys))
    for b in data.train_dataloader():
        targets = [b["labels"].gather(1, b[k]) for k in ("sense_pos", "rand_pos")]
        for looked_up in [*targets, b["syn_keys"], b["ant_keys"]]:
            looked_up = looked_up[looked_up != IGNORE_INDEX]
            assert senses.lookup(looked_up)[1].any(-1).all()  # at least one sense per key
    assert len(senses) == len(keys) < 300  # only those keys, not the 502 even keys of the vocabulary
