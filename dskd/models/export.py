"""Export a training checkpoint as a plain Hugging Face folder of the student.

The folder holds the student (``save_pretrained``, with the teacher's generation config), its
tokenizer (the teacher's, chat template included), ``export_meta.json`` (provenance: checkpoint,
step, experiment) and a model card ``README.md`` (:mod:`dskd.models.card`). It loads with
``AutoModelForCausalLM.from_pretrained`` alone; the projection used by the sense loss is not part of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from dskd.core.errors import DSKDError
from dskd.core.io import provenance, write_json_atomic
from dskd.core.outputs import artifact_dir, check_output
from dskd.core.quiet import DEEPSPEED_ON_CPU, drop_message
from dskd.core.stopping import stop_cleanly
from dskd.core.trusted_load import read_checkpoint
from dskd.models.card import write_card
from dskd.models.loading import load_causal_lm, load_tokenizer, plain_hf_progress

STUDENT_PREFIX = "student."


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded safely (``weights_only``: a crafted file is refused)."""
    if path.is_dir() and not (path / "latest").is_file():
        raise DSKDError(
            f"{path} is a folder but not a DeepSpeed checkpoint (it has no 'latest' file); pass a .ckpt "
            "file written by `dskd train` (runs/NAME/seed-S/checkpoints/last.ckpt) or a DeepSpeed "
            "checkpoint folder."
        )
    if path.is_dir():  # DeepSpeed writes a folder; gather its shards into one fp32 state dict
        single = path.with_name(path.name + ".fp32.pt")
        convert_zero_checkpoint_to_fp32_state_dict(str(path), str(single))
        path = single
    return read_checkpoint(path)


def frozen_weights(frozen: dict[str, Any]) -> dict[str, Any]:
    """The student weights a trainable-only checkpoint left out (its ``dskd.frozen`` record), copied from
    the teacher they were copied from in training, loaded in the same dtype."""
    if not all(k.startswith(STUDENT_PREFIX) for k in frozen["keys"]):
        raise DSKDError("The checkpoint's frozen weights are not all the student's; it is damaged.")
    keys = [k[len(STUDENT_PREFIX) :] for k in frozen["keys"]]
    teacher = load_causal_lm(frozen["teacher"], frozen["dtype"], frozen.get("revision")).state_dict()
    absent = [k for k in keys if k not in teacher]
    if absent:
        raise DSKDError(
            f"The teacher {frozen['teacher']} has no weights {absent[:3]} that the checkpoint's student "
            "copied from it; export with the teacher the run was trained with."
        )
    return {k: teacher[k] for k in keys}


PROBE_TOKENS = 8
"""Length of the input of the probe forward that every export runs (token ids 0..7)."""


def _check_logits(model: torch.nn.Module, checkpoint: Path, step: Any) -> None:
    """Refuse a student whose logits on a short probe input are not finite (a run that diverged)."""
    ids = torch.arange(PROBE_TOKENS).unsqueeze(0) % model.config.vocab_size
    with torch.no_grad():
        finite = bool(torch.isfinite(model(input_ids=ids).logits).all())
    if not finite:
        raise DSKDError(
            f"The student in {checkpoint} (step {step}) computes non-finite logits on a probe input: the "
            "run diverged, so it is not exported. Export an earlier checkpoint, or train again with a "
            "lower optim.lr (trainer.resume=never)."
        )


@stop_cleanly("the export")
def export_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, overwrite: bool = False, datasets: tuple[str, ...] = ()
) -> Path:
    """Write the student of ``checkpoint`` to ``out_dir`` (atomically) and return ``out_dir``; ``datasets``:
    the hub data sets the training read (:func:`dskd.corpora.sources.hub_datasets`; the card names them).

    ``out_dir`` is replaced only if it is absent, empty or an earlier export (or with ``overwrite``,
    unless it holds the checkpoint); see :func:`dskd.outputs.check_output`.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not checkpoint.exists():
        raise DSKDError(
            f"No checkpoint at {checkpoint}; train first (`dskd train CONFIG`) or pass a .ckpt path."
        )
    check_output(out_dir, "export", overwrite, [checkpoint])
    ckpt = _read_checkpoint(checkpoint)
    info = ckpt["dskd"]
    if not isinstance(info, dict) or "student_config" not in info:
        raise DSKDError(f"{checkpoint} was not written by `dskd train` (it has no 'dskd' section).")
    state = ckpt.get("state_dict") or ckpt.get("module") or {}
    student_state = {k[len(STUDENT_PREFIX) :]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
    if info.get("frozen"):
        student_state.update(frozen_weights(info["frozen"]))
    config_dict = dict(info["student_config"])
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(student_state, strict=False)
    if missing or unexpected:
        raise DSKDError(
            f"The student weights in {checkpoint} do not fit its config (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); the checkpoint is damaged or from another dskd version."
        )
    model.tie_weights()
    model.eval()
    _check_logits(model, checkpoint, ckpt.get("global_step"))
    if info.get("generation_config"):  # the teacher's: eos ids, sampling defaults
        model.generation_config = GenerationConfig.from_dict(info["generation_config"])
    tokenizer_dir = checkpoint.parent.parent / "tokenizer"
    tokenizer = load_tokenizer(tokenizer_dir if tokenizer_dir.is_dir() else info["tokenizer"])
    if len(tokenizer) > model.config.vocab_size:  # e.g. a cross-tokenizer student's checkpoint moved away
        raise DSKDError(
            f"The tokenizer found for {checkpoint} ({len(tokenizer)} tokens, from "
            f"{tokenizer_dir if tokenizer_dir.is_dir() else info['tokenizer']}) does not fit the student's "
            f"{model.config.vocab_size}-token vocabulary: export the checkpoint from its run folder, whose "
            "tokenizer/ holds the student's own tokenizer."
        )
    plain_hf_progress()
    drop_message(DEEPSPEED_ON_CPU)  # save_pretrained imports DeepSpeed (through accelerate) where installed
    with artifact_dir(out_dir, "export", overwrite, [checkpoint, tokenizer_dir]) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        meta = provenance(
            "export",
            {
                "checkpoint": str(checkpoint),
                "global_step": ckpt.get("global_step"),
                "tokenizer": info["tokenizer"],
            },
        )
        meta["experiment_config"] = info["config"]
        meta["datasets"] = list(datasets)
        write_json_atomic(tmp / "export_meta.json", meta)
        write_card(tmp)
    return out_dir
