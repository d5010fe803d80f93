"""Per-GPU memory of a training run, estimated from the teacher's shapes and the config (`dskd memory`).

Every row is a formula over the shapes (docs/training.md, "Memory per GPU"); nothing is measured. The
estimate covers steady-state training; the start-up peak (the student whole on the GPU before the
sharding strategy splits it) is a separate row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from dskd.data.config import DataConfig
from dskd.lexicon.artifact import Lexicon
from dskd.losses.config import LossConfig
from dskd.models.config import StudentConfig, TeacherConfig
from dskd.models.loading import resolve_model
from dskd.senses.config import SensesConfig
from dskd.senses.dictionary import INDEX_BYTES, SENSES_FILE, stored_size
from dskd.training.config import TrainerConfig
from dskd.training.sharing import shares_trunk

GB = 1e9
ALLOCATOR_OVERHEAD_GB = 3.0
"""CUDA context, NCCL buffers and allocator fragmentation: an allowance, not a formula."""
LOSS_CHUNK_TENSORS = 6
"""fp32 ``[chunk, V]`` tensors alive at once in a chunk of the fused CE + KD (student logits, both
log-softmaxes, the teacher's probabilities, the logits' gradient and one temporary)."""
SHARDED_WEIGHTS = ("fsdp", "deepspeed_stage_3")
SHARDED_OPTIMIZER = ("fsdp", "deepspeed_stage_2", "deepspeed_stage_3")


@dataclass(frozen=True)
class ModelShape:
    """The shapes of a Llama-like decoder (Llama, Mistral, Qwen2, SmolLM2 ...)."""

    layers: int
    hidden: int
    ffn: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = False
    """Input embedding and LM head share one matrix."""

    @classmethod
    def from_hf_config(cls, config: Any) -> ModelShape:
        """The shape of a Hugging Face config (``LlamaConfig``, ``MistralConfig``, ...)."""
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            ffn=config.intermediate_size,
            vocab=config.vocab_size,
            heads=config.num_attention_heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
        )

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def layer_params(self) -> int:
        """Attention (q, k, v, o), SwiGLU MLP (gate, up, down) and the two RMSNorms of one layer."""
        d = self.hidden
        return 2 * d * d + 2 * d * self.kv_dim + 3 * d * self.ffn + 2 * d

    @property
    def embedding_params(self) -> int:
        """Input embedding, LM head (once when tied) and the final norm."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    def params(self, layers: int | None = None) -> int:
        """All parameters with the first ``layers`` layers (default: all)."""
        return self.embedding_params + (self.layers if layers is None else layers) * self.layer_params


@dataclass(frozen=True)
class MemoryInputs:
    """The config sections a memory estimate reads."""

    name: str
    method: str
    teacher: TeacherConfig
    student: StudentConfig
    trainer: TrainerConfig
    data: DataConfig
    loss: LossConfig
    senses: SensesConfig
    lexicon_dir: str | None = None
    """lexicon.output_dir: the lexicon, when built, bounds the dictionary's keys before it exists."""


KNOWN_SHAPES = {
    "meta-llama/Meta-Llama-3-8B-Instruct": ModelShape(32, 4096, 14336, 128256, 32, 8),
    "mistralai/Mistral-7B-Instruct-v0.1": ModelShape(32, 4096, 14336, 32000, 32, 8),
}
"""The paper teachers (their config.json), for estimates without the hub."""


def teacher_shape(teacher: TeacherConfig) -> ModelShape:
    """The teacher's shape: a paper teacher from :data:`KNOWN_SHAPES`, else its config.json."""
    if teacher.model in KNOWN_SHAPES:
        return KNOWN_SHAPES[teacher.model]
    return ModelShape.from_hf_config(AutoConfig.from_pretrained(resolve_model(teacher.model)))


def _bytes(dtype: str) -> int:
    return 4 if dtype in ("float32", "32-true") else 2


def sense_dictionary_size(cfg: MemoryInputs, shape: ModelShape, dtype_bytes: int) -> tuple[float, str]:
    """(GB, formula) of the sense dictionary a run loads: read from the built dictionary at
    ``senses.output_dir`` when there is one (only the lexicon's keys with ``senses.restrict_to_lexicon``);
    before it exists, an upper bound: every key it could hold with k senses each. Those keys are the
    lexicon's sense keys with ``restrict_to_lexicon``, else the V tokens plus the lexicon's VIDs (any
    token may be a P2 target; a VID has senses only when its tokens have); before the lexicon exists
    too, V keys."""
    lexicon = Path(cfg.lexicon_dir) if cfg.lexicon_dir else None
    lexicon = Lexicon.load(lexicon) if lexicon is not None and lexicon.is_dir() else None
    restrict = cfg.senses.restrict_to_lexicon and lexicon is not None
    keys = torch.from_numpy(lexicon.sense_keys()) if restrict else None
    if (Path(cfg.senses.output_dir) / SENSES_FILE).is_file():
        senses, nbytes = stored_size(cfg.senses.output_dir, keys)
        return nbytes / GB, f"{senses:,} senses x d x bytes + key index (the built dictionary)"
    vids = len(lexicon.vid_tokens) if lexicon is not None else 0
    table = shape.vocab + vids
    n_keys, what = (len(keys), "lexicon keys") if keys is not None else (table, "V + VIDs" if vids else "V")
    nbytes = n_keys * cfg.senses.k * shape.hidden * dtype_bytes + INDEX_BYTES * table
    return nbytes / GB, f"at most {what} x k x d x {dtype_bytes} + key index (no dictionary built yet)"


def shared(cfg: MemoryInputs) -> bool:
    """Whether the run shares the trunk (:mod:`dskd.training.sharing`; the teacher runs on a GPU, where
    ``teacher.dtype=auto`` is bf16): its student then holds only its trainable layers."""
    runs = cfg.teacher.mode == "online" or cfg.data.on_policy.fraction > 0
    dtype = {"float32": torch.float32, "float16": torch.float16}.get(cfg.teacher.dtype, torch.bfloat16)
    return runs and shares_trunk(cfg.student, cfg.trainer, dtype)


def _student_weights(cfg: MemoryInputs, shape: ModelShape) -> tuple[int, str]:
    """(student parameters held besides the teacher's, their symbol): P_train with a shared trunk."""
    if shared(cfg):
        return cfg.student.trainable_top_layers * shape.layer_params, "P_train"
    return shape.params(cfg.student.num_layers), "P_S"


def estimate(
    cfg: MemoryInputs, shape: ModelShape, world_size: int, gpu_gb: float = 80.0
) -> list[tuple[str, float, str]]:
    """(row, GB per GPU, formula) of a run of ``cfg`` (student.kind=truncated) on ``world_size`` GPUs.

    Teacher in ``teacher.dtype`` (auto: bf16), replicated; student master weights fp32 unless
    ``bf16-true``, sharded over the GPUs under FSDP / ZeRO-3; AdamW state and gradients fp32 for the
    trainable layers, sharded under FSDP / ZeRO; activations saved for the trainable layers only (the
    frozen layers below them keep none); the fused loss's chunk; the sense dictionary (``method=dskd``,
    :func:`sense_dictionary_size`) where ``senses.device`` puts it (auto: on the GPU when it takes at
    most 25% of ``gpu_gb``).
    """
    t, d = cfg.trainer, cfg.data
    n_tr = cfg.student.trainable_top_layers
    w = world_size
    shard_w = w if t.strategy in SHARDED_WEIGHTS else 1
    shard_o = w if t.strategy in SHARDED_OPTIMIZER else 1
    teacher_bytes = _bytes("float32" if cfg.teacher.dtype == "float32" else "bfloat16")
    master = 2 if t.precision == "bf16-true" else 4
    compute = 4 if t.precision == "32-true" else 2
    (p_s, held), p_tr = _student_weights(cfg, shape), n_tr * shape.layer_params
    shared_note = "; the frozen part is the teacher's (shared trunk)" if held == "P_train" else ""
    tokens = d.batch_size * d.seq_len
    rows = [
        (
            "teacher weights",
            shape.params() * teacher_bytes / GB,
            f"P_T x {teacher_bytes} bytes, whole on every GPU",
        ),
        (
            "student weights (shard)",
            p_s * master / shard_w / GB,
            f"{held} x {master} bytes (master weights) / {shard_w}{shared_note}",
        ),
    ]
    if t.strategy == "fsdp" and held == "P_train":  # the shared modules are the teacher's, never gathered
        units = min(2, n_tr)
        gathered = units * shape.layer_params * compute / GB
        rows.append(("FSDP gathered units", gathered, f"{units} trainable layers x {compute} bytes"))
    elif t.strategy == "fsdp":
        gathered = (shape.embedding_params + 2 * shape.layer_params) * compute / GB
        rows.append(("FSDP gathered units", gathered, f"(embeddings + head + 2 layers) x {compute} bytes"))
    rows += [
        ("gradients (shard)", p_tr * 4 / shard_o / GB, f"P_train x 4 (fp32) / {shard_o}"),
        ("AdamW state (shard)", p_tr * 8 / shard_o / GB, f"P_train x 8 (two fp32 moments) / {shard_o}"),
        (
            "activations",
            n_tr * tokens * (16 * shape.hidden + 4 * shape.kv_dim + 8 * shape.ffn) / GB,
            "trainable layers x B x L x (16 d + 4 d_kv + 8 ffn) bytes",
        ),
    ]
    chunk = min(cfg.loss.kd.chunk_size or tokens, tokens)
    rows.append(
        ("CE + KD loss", LOSS_CHUNK_TENSORS * chunk * shape.vocab * 4 / GB, "6 x chunk x V x 4 (fp32)")
    )
    if cfg.method == "dskd":
        dictionary, formula = sense_dictionary_size(cfg, shape, teacher_bytes)
        device = cfg.senses.device
        on_gpu = device not in ("cpu", "pinned") and (device != "auto" or dictionary <= 0.25 * gpu_gb)
        where = formula if on_gpu else f"in (pinned) host memory: {formula}"
        rows.append(("sense dictionary", dictionary if on_gpu else 0.0, where))
    rows.append(("CUDA context, NCCL, fragmentation", ALLOCATOR_OVERHEAD_GB, "allowance"))
    return rows


def startup_peak(cfg: MemoryInputs, shape: ModelShape) -> float:
    """GB on a GPU before sharding: the teacher plus the whole student in its master dtype (both are
    built on the GPU; with a shared trunk the student holds only its trainable layers). One teacher, as in
    the rows of :func:`estimate`: the stages of a process (senses, continuations, cache, every run and the
    evaluation of `dskd reproduce`) share the one training runs (:class:`dskd.models.shared.TeacherHolder`);
    a cached run without on-policy batches lets it go and holds only the copied layers, on the CPU."""
    teacher_bytes = _bytes("float32" if cfg.teacher.dtype == "float32" else "bfloat16")
    master = 2 if cfg.trainer.precision == "bf16-true" else 4
    return (shape.params() * teacher_bytes + _student_weights(cfg, shape)[0] * master) / GB


def render(cfg: MemoryInputs, shape: ModelShape, world_size: int, gpu_gb: float = 80.0) -> str:
    """The estimate as a markdown table, with the total and the start-up peak, and whether it fits."""
    rows = estimate(cfg, shape, world_size, gpu_gb)
    total, peak = sum(gb for _, gb, _ in rows), startup_peak(cfg, shape)
    lines = [
        f"{cfg.name}: teacher {cfg.teacher.model} ({shape.params() / 1e9:.2f} B parameters), student "
        f"{cfg.student.num_layers} layers ({shape.params(cfg.student.num_layers) / 1e9:.2f} B, "
        f"{cfg.student.trainable_top_layers * shape.layer_params / 1e9:.2f} B trainable), "
        f"{cfg.trainer.strategy}, {cfg.trainer.precision}, {world_size} GPUs, "
        f"batch {cfg.data.batch_size} x {cfg.data.seq_len} tokens",
        "",
        "| per GPU | GB | formula |",
        "|---|---:|---|",
        *(f"| {name} | {gb:.2f} | {formula} |" for name, gb, formula in rows),
        f"| **total** | **{total:.1f}** | of {gpu_gb:g} GB |",
        f"| start-up peak (before sharding) | {peak:.1f} | teacher + "
        f"{'trainable layers (shared trunk)' if shared(cfg) else 'whole student'} |",
        "",
        _verdict(max(total, peak), gpu_gb),
    ]
    return "\n".join(lines) + "\n"


def _verdict(need: float, gpu_gb: float) -> str:
    """Whether the larger of the total and the start-up peak fits ``gpu_gb`` per GPU."""
    if need <= gpu_gb:
        return f"Fits: at most {need:.1f} of {gpu_gb:g} GB per GPU ({gpu_gb - need:.1f} GB to spare)."
    return (
        f"Does not fit: {need:.1f} GB per GPU needed, {gpu_gb:g} GB available ({need - gpu_gb:.1f} GB over); "
        "more GPUs (trainer.strategy shards the student) or a smaller data.batch_size or data.seq_len "
        "lower it."
    )
