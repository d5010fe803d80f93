"""Teacher cache: the teacher's top-k logits and hidden states, precomputed once for cached training."""

from dskd.teacher_cache.store import CachedOutputs, CachedTeacher, sequence_keys

__all__ = ["CachedOutputs", "CachedTeacher", "sequence_keys"]
