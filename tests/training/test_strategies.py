"""Strategy objects for every `trainer.strategy` (FSDP and DeepSpeed only run on GPUs: `make gpu-check`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from dskd.models.config import StudentConfig
from dskd.tracking.session import wandb_online
from dskd.training.config import TrainerConfig
from dskd.training.loggers import run_tags
from dskd.training.strategies import build_strategy, deepspeed_gradient_norm, gathered, gradient_norm


def test_auto_and_ddp():
    from lightning.pytorch.strategies import DDPStrategy

    assert build_strategy(TrainerConfig(strategy="auto"), LlamaDecoderLayer) == "auto"
    ddp = build_strategy(TrainerConfig(strategy="ddp"), LlamaDecoderLayer)
    assert isinstance(ddp, DDPStrategy) and ddp._ddp_kwargs["find_unused_parameters"] is False


def test_fsdp_wraps_decoder_layers_and_keeps_original_parameters():
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy

    fsdp = build_strategy(TrainerConfig(strategy="fsdp", precision="bf16-mixed"), LlamaDecoderLayer)
    assert isinstance(fsdp, FSDPStrategy)
    assert fsdp.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert fsdp.kwargs["use_orig_params"] is True  # frozen and trainable weights in one flat parameter
    policy = fsdp.kwargs["auto_wrap_policy"]
    assert LlamaDecoderLayer in policy._module_classes
    assert fsdp._state_dict_type == "full"


def test_fsdp_leaves_a_shared_trunks_modules_out_of_its_units(tmp_path):
    from dskd.models.loading import load_causal_lm
    from dskd.models.student import build_student, decoder_layers
    from dskd.models.trunk import shared_modules

    from .tinyrun import make_model_dir

    teacher = load_causal_lm(make_model_dir(tmp_path / "teacher"), dtype="float32")
    cfg = StudentConfig(num_layers=3, trainable_top_layers=1)
    student = build_student(cfg, teacher, share=True)
    shared = shared_modules(student, teacher)
    decoder, layers = teacher.get_decoder(), decoder_layers(teacher)
    want = [decoder.embed_tokens, layers[0], layers[1], decoder.norm, decoder.rotary_emb, teacher.lm_head]
    assert {id(m) for m in shared} == {id(m) for m in want} and len(shared) == len(want)
    assert shared_modules(build_student(cfg, teacher), teacher) == []  # copies: nothing is the teacher's
    fsdp = build_strategy(TrainerConfig(strategy="fsdp"), LlamaDecoderLayer, shared=shared)
    assert fsdp.kwargs["ignored_modules"] == shared
    assert "ignored_modules" not in build_strategy(TrainerConfig(strategy="fsdp"), LlamaDecoderLayer).kwargs
    # wrapped as Lightning wraps the LightningModule (one CPU process): the teacher keeps its modules
    ids = torch.arange(1, 9).unsqueeze(0)
    want = teacher(input_ids=ids).logits
    before = {n: (p, p.data_ptr(), p.shape) for n, p in teacher.named_parameters()}
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        root = FSDP(torch.nn.ModuleDict({"student": student}), device_id=torch.device("cpu"), **fsdp.kwargs)
        assert isinstance(decoder_layers(student)[2], FSDP)  # the trainable layer: its own unit
        assert not any(isinstance(m, FSDP) for m in teacher.modules())  # no shared module wrapped
        after = {n: (p, p.data_ptr(), p.shape) for n, p in teacher.named_parameters()}
        assert after == before  # the same tensors, whole, in their own storage (no flat parameter)
        flat = [p for m in FSDP.fsdp_modules(root) for h in [m._handle] if h for p in h.flat_param._params]
        assert {id(p) for p in flat}.isdisjoint(id(p) for p, _, _ in before.values()) and flat
        torch.testing.assert_close(teacher(input_ids=ids).logits, want, rtol=0, atol=0)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_stage(stage):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    ds = build_strategy(TrainerConfig(strategy=f"deepspeed_stage_{stage}"), LlamaDecoderLayer, batch_size=4)
    assert isinstance(ds, DeepSpeedStrategy)
    assert ds.config["zero_optimization"]["stage"] == stage
    assert ds.config["train_micro_batch_size_per_gpu"] == 4


def test_gradient_norm_outside_fsdp_and_deepspeed_is_the_norm_of_the_trainable_gradients():
    layer, frozen = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2).requires_grad_(False)
    params = [*layer.parameters(), *frozen.parameters()]
    assert gradient_norm(None, TrainerConfig(strategy="ddp"), 1.0, params) is None  # no gradient yet
    layer(torch.ones(4, 3)).square().sum().backward()
    want = torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()
    got = gradient_norm(None, TrainerConfig(strategy="auto"), 1.0, params)
    torch.testing.assert_close(got, want)
    assert all(p.grad is not None for p in layer.parameters())  # measured only: Lightning clips


def test_fsdp_clips_through_its_root_module_and_deepspeed_reports_its_engines_norm():
    class Root:
        def clip_grad_norm_(self, max_norm):
            self.max_norm = max_norm
            return torch.tensor(2.5)

    root = Root()
    fsdp = SimpleNamespace(model=root)
    assert gradient_norm(fsdp, TrainerConfig(strategy="fsdp"), None, []).item() == 2.5
    assert root.max_norm == float("inf")  # no clipping asked: measured only
    gradient_norm(fsdp, TrainerConfig(strategy="fsdp"), 0.5, [])
    assert root.max_norm == 0.5
    engine = SimpleNamespace(get_global_grad_norm=lambda: torch.tensor(1.25))
    assert deepspeed_gradient_norm(SimpleNamespace(deepspeed_engine=engine)) == 1.25
    assert deepspeed_gradient_norm(SimpleNamespace()) is None


def test_gathering_a_module_without_zero_3_partitions_is_a_no_op():
    layer = torch.nn.Linear(2, 2)
    with gathered(layer):
        assert layer.weight.shape == (2, 2)


def test_wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert not wandb_online()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_online()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert not wandb_online()
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_online()


def test_run_tags_name_method_and_changed_switches():
    from dskd.config.loading import config_from_dict

    cfg = config_from_dict(
        {"method": "kd", "loss": {"sense": {"negatives": False}}, "logging": {"tags": ["mine", "kd"]}}
    )
    tags = run_tags(cfg.method, cfg.student, cfg.loss, cfg.data, cfg.logging.tags)
    assert tags[0] == "kd" and "loss.sense.negatives=false" in tags and tags.count("kd") == 1
    assert "mine" in tags and not any("positives" in t for t in tags)
