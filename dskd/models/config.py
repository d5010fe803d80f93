"""Config of the teacher and the student."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from dskd.config.ranges import ranged

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
StudentTokenizer = Literal["teacher", "wordnet-bpe"]
DTYPES: tuple[str, ...] = get_args(Dtype)


@dataclass
class TeacherConfig:
    model: str = "smollm2-135m-instruct"
    """Asset name, local Hugging Face folder or hub id."""
    revision: str | None = None
    """Hub revision (ignored for assets and folders)."""
    dtype: Dtype = "auto"
    """auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16."""
    mode: Literal["online", "cached"] = "online"
    """online (forward every step) | cached (read the teacher's KD terms and hidden states from the
    teacher cache, the `cache` section, docs/teacher_cache.md)."""


@dataclass
class StudentConfig:
    kind: Literal["truncated", "hf", "scratch"] = "truncated"
    """truncated (teacher's first `num_layers` layers, paper recipe) | hf (any causal LM in `model`) |
    scratch (a new Llama of `num_layers`, `hidden_size`, `num_heads`, `intermediate_size`, randomly
    initialised from the run's seed, over the vocabulary of `tokenizer`)."""
    model: str | None = None
    """For kind=hf: asset name, folder or hub id."""
    num_layers: int = ranged(16, ge=1)
    """Layers kept from the teacher (kind=truncated), or of the new model (kind=scratch)."""
    trainable_top_layers: int = ranged(2, ge=0)
    """Only the top layers train; embeddings, final norm and LM head are frozen (kind=truncated)."""
    share_trunk: bool = True
    """kind=truncated: the frozen embeddings, lower layers, final norm and LM head are the teacher's
    own modules, run once per step for both models (docs/training.md, "Shared trunk"); off: the
    student holds copies and runs them itself. Off with a note where it cannot apply (kind=hf, all
    layers trainable, DeepSpeed, a -true precision whose dtype is not the teacher's)."""
    projection: Literal["auto", "linear", "none"] = "auto"
    """auto (linear when hidden sizes differ) | linear | none."""
    tokenizer: StudentTokenizer = "teacher"
    """kind=scratch: the vocabulary of the new model: teacher (the teacher's tokenizer) | wordnet-bpe (the
    project's byte-level BPE trained on the WordNet corpus, dskd/data/bpe.py; a different tokenizer, so
    only loss.kd.divergence=uld|uld_hybrid can distil into it). kind=truncated uses the teacher's, kind=hf
    its model's own."""
    bpe_vocab_size: int = ranged(8000, ge=300)
    """Entries of the wordnet-bpe vocabulary (student.tokenizer=wordnet-bpe)."""
    hidden_size: int = ranged(256, ge=8)
    """Hidden size of the new model (kind=scratch)."""
    num_heads: int = ranged(4, ge=1)
    """Attention heads of the new model (kind=scratch); they divide hidden_size."""
    intermediate_size: int = ranged(1024, ge=8)
    """MLP width of the new model (kind=scratch)."""
