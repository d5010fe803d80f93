"""Students: the teacher truncated to its first layers (paper recipe), any Hugging Face causal LM, or a
new Llama built from the config over its own vocabulary (``kind=scratch``).

The truncated student copies the teacher's embeddings, first ``num_layers`` decoder layers, final
norm and LM head; everything is frozen except the top ``trainable_top_layers`` layers. With
``share`` the frozen parts are not copied: they are the teacher's own modules (the shared trunk,
:mod:`dskd.models.trunk`). A student
whose hidden size differs from the teacher's gets a learned linear projection into the teacher's
hidden space for the sense loss (it is not part of the exported model).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from dskd.core.errors import ConfigError, DSKDError
from dskd.models.config import StudentConfig
from dskd.models.loading import load_causal_lm, tokenizer_fingerprint


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers of a Hugging Face causal LM."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise DSKDError(
            f"Cannot find the decoder layers of {type(model).__name__} (expected "
            "`model.get_decoder().layers`); use student.kind=hf with a separately stored student "
            "model instead of truncation."
        )
    return layers


def decoder_layer_class(model: nn.Module) -> type[nn.Module]:
    """Class of the model's decoder layers (the unit FSDP wraps)."""
    return type(decoder_layers(model)[0])


def check_depth(num_layers: int, teacher_layers: int) -> None:
    """Refuse a truncated student of ``num_layers`` that the teacher's ``teacher_layers`` cannot give."""
    if not 1 <= num_layers <= teacher_layers:
        raise ConfigError(
            f"student.num_layers={num_layers} must be between 1 and the teacher's {teacher_layers} layers."
        )


def truncate(
    teacher: nn.Module, num_layers: int, trainable_top_layers: int, share: bool = False
) -> nn.Module:
    """A copy of ``teacher`` with its first ``num_layers`` layers; only the top ones train. With
    ``share`` the frozen modules (embeddings, lower layers, final norm, LM head) are the teacher's."""
    layers = decoder_layers(teacher)
    check_depth(num_layers, len(layers))
    if not 0 <= trainable_top_layers <= num_layers:
        raise ConfigError(
            f"student.trainable_top_layers={trainable_top_layers} must be between 0 and "
            f"student.num_layers={num_layers}."
        )
    decoder = teacher.get_decoder()
    decoder.layers = nn.ModuleList(list(layers)[:num_layers])
    frozen = _frozen_modules(teacher, num_layers - trainable_top_layers) if share else []
    try:
        # copies only the kept layers; ties and buffers survive; modules in the memo are kept as they are
        student = copy.deepcopy(teacher, {id(m): m for m in frozen})
    finally:
        decoder.layers = layers
    student.config.num_hidden_layers = num_layers
    if getattr(student.config, "layer_types", None) is not None:
        student.config.layer_types = list(student.config.layer_types)[:num_layers]
    student.requires_grad_(False)
    for layer in list(decoder_layers(student))[num_layers - trainable_top_layers :]:
        layer.requires_grad_(True)
    student.train()
    return student


def _frozen_modules(teacher: nn.Module, depth: int) -> list[nn.Module]:
    """The teacher's modules a student frozen below layer ``depth`` shares: embeddings, rotary
    tables, the first ``depth`` layers, final norm and LM head."""
    decoder = teacher.get_decoder()
    frozen = [teacher.get_input_embeddings(), teacher.get_output_embeddings(), *list(decoder.layers)[:depth]]
    return frozen + [m for name, m in decoder.named_children() if name in ("norm", "rotary_emb")]


def scratch_student(cfg: StudentConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> nn.Module:
    """A new Llama of ``cfg``'s shape over ``tokenizer``'s vocabulary, initialised from ``seed`` alone
    (whatever ran on the global generator before), in float32, every weight trainable."""
    if cfg.hidden_size % cfg.num_heads:
        raise ConfigError(
            f"student.num_heads={cfg.num_heads} must divide student.hidden_size={cfg.hidden_size}."
        )
    eos = tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = LlamaForCausalLM(config)
    student.requires_grad_(True)
    return student.train()


def build_student(
    cfg: StudentConfig, teacher: nn.Module, share: bool = False, vocab: PreTrainedTokenizerBase | None = None
) -> nn.Module:
    """The student described by ``cfg`` (kind=truncated copies ``teacher``, or with ``share`` shares
    its frozen modules; kind=hf loads a model; kind=scratch builds one over the tokenizer ``vocab``,
    seeded by torch's initial seed, the run's ``seed`` after ``seed_everything``)."""
    if cfg.kind == "truncated":
        return truncate(teacher, cfg.num_layers, cfg.trainable_top_layers, share)
    device = next(teacher.parameters()).device
    if cfg.kind == "scratch":
        if vocab is None:
            raise DSKDError("student.kind=scratch is built over a tokenizer (build_student(..., vocab=)).")
        return scratch_student(cfg, vocab, torch.initial_seed()).to(device)
    student = load_causal_lm(cfg.model, dtype="float32", device=device)  # kind=hf, checked at load
    student.requires_grad_(True)
    student.train()
    return student


def hidden_size(model: nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[1])


def build_projection(cfg: StudentConfig, student: nn.Module, teacher: nn.Module) -> nn.Module | None:
    """Linear map from the student's to the teacher's hidden space (None when not needed)."""
    d_s, d_t = hidden_size(student), hidden_size(teacher)
    if cfg.projection == "none" or (cfg.projection == "auto" and d_s == d_t):
        if d_s != d_t:
            raise ConfigError(
                f"student.projection=none but the student's hidden size ({d_s}) differs from the "
                f"teacher's ({d_t}); the sense loss needs student.projection=auto or linear."
            )
        return None
    proj = nn.Linear(d_s, d_t, bias=False)
    if d_s == d_t:
        nn.init.eye_(proj.weight)
    return proj


def check_vocab(
    teacher: nn.Module, student: nn.Module, tokenizer, student_tokenizer=None, divergence: str = "forward_kl"
) -> None:
    """Refuse a student and teacher that do not share the tokenizer's vocabulary for the per-position
    ``divergence`` (loss.kd.divergence); a cross-tokenizer run (uld, uld_hybrid) does not call it."""
    rows_t = teacher.get_output_embeddings().weight.shape[0]
    rows_s = student.get_output_embeddings().weight.shape[0]
    n_tok = len(tokenizer)
    problems = []
    if rows_t != rows_s:
        problems.append(f"the teacher's LM head has {rows_t} rows but the student's has {rows_s}")
    for who, rows in (("teacher", rows_t), ("student", rows_s)):
        if n_tok > rows:
            problems.append(f"the tokenizer has {n_tok} tokens but the {who}'s LM head only {rows} rows")
        emb = student.get_input_embeddings() if who == "student" else teacher.get_input_embeddings()
        if emb.weight.shape[0] < n_tok:
            problems.append(f"the {who}'s embedding has {emb.weight.shape[0]} rows for {n_tok} tokens")
    if student_tokenizer is not None and tokenizer_fingerprint(student_tokenizer) != tokenizer_fingerprint(
        tokenizer
    ):
        problems.append("the student's tokenizer differs from the teacher's (different vocabulary)")
    if problems:
        raise DSKDError(
            "The student and the teacher do not share one vocabulary: "
            + "; ".join(problems)
            + f". loss.kd.divergence={divergence} compares token distributions position by position, so "
            "both models must use the same tokenizer; choose a student built for the teacher's tokenizer "
            "(student.kind=truncated, or student.kind=scratch with student.tokenizer=teacher), or distil "
            "across tokenizers with loss.kd.divergence=uld|uld_hybrid (e.g. student.kind=scratch with "
            "student.tokenizer=wordnet-bpe; docs/losses.md)."
        )
