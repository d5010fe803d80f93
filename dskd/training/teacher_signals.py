"""Teacher signals: what a training step reads from the teacher, one class per source.

A :class:`TeacherSignal` reads a batch (:meth:`~TeacherSignal.read`) and gives what the losses need:
the teacher's last hidden states (the sense loss's anchors, :meth:`~TeacherSignal.sense_states`),
the KD term for the student's logits and mask, with the teacher's top-1 token per position
(:meth:`~TeacherSignal.kd`; validation's agreement), and from these the CE + KD of the student's
LM-head inputs and the validation sums. The step never asks which source it reads:

- :class:`OnlineTeacher`: the teacher model runs on the batch; exact KD from its logits, or, with
  ``loss.kd.chunk_size``, chunk by chunk from both models' hidden states (:mod:`dskd.losses.kd`).
- :class:`CachedTopK`: the teacher cache's top-k logits and tail mass (:mod:`dskd.losses.topk`).
- :class:`CachedSamples`: tokens the cache drew from the teacher (:mod:`dskd.losses.sampled`).

- :class:`SharedTrunk`: the teacher model with a student that shares its frozen bottom
  (:mod:`dskd.models.trunk`): as online, and its reading also holds the trunk's output, from which
  the step runs only the student's trainable layers.
- :class:`CrossTokenizerTeacher`: the teacher model on its own tokenization of a
  :class:`~dskd.core.batch.CrossTokenizerBatch` (a student with another tokenizer): the ULD term of
  the student's logits over the aligned text spans (:mod:`dskd.losses.uld`).

A new source is one more subclass with ``read`` and ``kd``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dskd.core.batch import IGNORE_INDEX, SenseBatch, TokenBatch
from dskd.core.errors import ConfigError
from dskd.losses.config import LossConfig
from dskd.losses.kd import CEKD, HeadInput, ce_and_kd_chunked, kd_loss, validation_sums_chunked
from dskd.losses.sampled import TeacherSamples, sampled_kd_loss
from dskd.losses.topk import TeacherTopK, topk_kd_loss
from dskd.losses.uld import SpanSide, VocabMatch, uld_loss
from dskd.models.config import TeacherConfig
from dskd.models.loading import runtime_dtype
from dskd.models.trunk import Trunk
from dskd.teacher_cache.store import CachedTeacher
from dskd.training.strategies import gathered

CachedDistribution = TeacherTopK | TeacherSamples
"""The teacher cache's summary of the teacher's next-token distribution at each position of a batch:
its top-k log-probabilities and tail mass, or tokens drawn from it."""


@dataclass(frozen=True)
class SpanTargets:
    """A cross-tokenizer batch's next-token targets and target span ids, both sides
    (:class:`dskd.core.batch.CrossTokenizerBatch`)."""

    teacher_labels: torch.Tensor
    teacher_span: torch.Tensor
    student_labels: torch.Tensor
    student_span: torch.Tensor


@dataclass
class TeacherReading:
    """What a teacher signal read for one batch."""

    hidden: torch.Tensor | None
    """Teacher last hidden states after the final norm ``[B, L, d]`` (None: a KD-only cache)."""
    distribution: CachedDistribution | None = None
    """The cache's summary of the teacher's distribution (None online: the logits are computed)."""
    hidden_stored: torch.Tensor | None = None
    """``[B, L]`` bool: where a cache holding some positions' hidden states holds one (else None)."""
    trunk: torch.Tensor | None = None
    """``[B, L, d]`` the shared trunk's output, which the student's trainable layers continue from
    (:class:`SharedTrunk`; else None: the student runs its whole decoder)."""
    spans: SpanTargets | None = None
    """The aligned spans of a cross-tokenizer batch (:class:`CrossTokenizerTeacher`; else None)."""


class KDTerm(NamedTuple):
    value: torch.Tensor
    """``alpha * tau^2 *`` the mean divergence over the mask's positions (with gradient)."""
    teacher_top1: torch.Tensor
    """``[B, L]`` the teacher's most likely token at each position."""


class TeacherSignal:
    """One source of the teacher's signal. Subclasses give :meth:`read` and :meth:`kd`; the CE + KD
    and the validation sums here project the student's full logits once and call :meth:`kd`."""

    def __init__(self, loss: LossConfig) -> None:
        self.loss = loss

    def to(self, device: torch.device) -> None:
        """Move what the signal reads to ``device`` (before each step; a cache reads to the batch's)."""

    def read(self, batch: TokenBatch) -> TeacherReading:
        raise NotImplementedError

    def kd(self, reading: TeacherReading, student_logits: torch.Tensor, mask: torch.Tensor) -> KDTerm:
        raise NotImplementedError

    def sense_states(self, reading: TeacherReading, batch: SenseBatch) -> torch.Tensor:
        """The teacher's hidden states the sense loss reads at ``batch``'s positions."""
        return reading.hidden

    def ce_and_kd(
        self,
        reading: TeacherReading,
        h_s: torch.Tensor,
        head: nn.Module,
        labels: torch.Tensor,
        mask: torch.Tensor,
        ce_applies: bool,
    ) -> CEKD:
        """(``ce_weight`` * CE + KD with gradient, CE, KD) of the student's LM-head inputs ``h_s`` and
        its ``head`` over the positions of ``mask``; without ``ce_applies`` (an on-policy batch: the
        tokens are the student's own) CE is 0."""
        logits_s = head(h_s)
        if ce_applies:
            targets = labels.masked_fill(~mask, IGNORE_INDEX)
            ce = F.cross_entropy(logits_s.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
        else:
            ce = torch.zeros((), device=logits_s.device)
        kd = self.kd(reading, logits_s, mask).value
        return CEKD(self.loss.ce_weight * ce + kd, ce.detach(), kd.detach())

    def validation_sums(
        self,
        reading: TeacherReading,
        h_s: torch.Tensor,
        head: nn.Module,
        labels: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """[CE sum, KD sum, top-1 agreements, positions] over the positions of ``mask``."""
        logits_s = head(h_s)
        n = mask.sum()
        ce_sum = F.cross_entropy(
            logits_s.flatten(0, 1).float(),
            labels.masked_fill(~mask, IGNORE_INDEX).flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        kd, teacher_top1 = self.kd(reading, logits_s, mask)
        agree = ((logits_s.argmax(-1) == teacher_top1) & mask).sum()
        return torch.stack([ce_sum.float(), (kd * n).float(), agree.float(), n.float()])


class OnlineTeacher(TeacherSignal):
    """The teacher model, frozen and run on each batch: exact KD from its logits. With
    ``loss.kd.chunk_size`` CE + KD and the validation sums go ``chunk_size`` positions at a time from
    both models' hidden states: neither model's full-vocabulary logits exist (7 GB at batch 1,
    2048 tokens, V = 128k)."""

    def __init__(self, model: nn.Module, loss: LossConfig, dtype: str) -> None:
        super().__init__(loss)
        model.requires_grad_(False)
        model.eval()
        self.model = model
        self.dtype = dtype
        """``teacher.dtype``: the dtype it runs in (auto: float32 on a CPU)."""

    def to(self, device: torch.device) -> None:
        dtype = runtime_dtype(self.dtype, device)
        p = next(self.model.parameters())
        if p.device != device or p.dtype != dtype:
            self.model.to(device=device, dtype=dtype)
        self.model.eval()

    def read(self, batch: TokenBatch) -> TeacherReading:
        # use_cache=False: no key/value cache (a forward of 2048 tokens would keep one per layer)
        with torch.no_grad():
            out = self.model.get_decoder()(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            )
        return TeacherReading(out.last_hidden_state)

    def kd(self, reading: TeacherReading, student_logits: torch.Tensor, mask: torch.Tensor) -> KDTerm:
        with torch.no_grad():
            logits_t = self.model.get_output_embeddings()(reading.hidden)
        return KDTerm(kd_loss(student_logits, logits_t, mask, kd=self.loss.kd), logits_t.argmax(-1))

    def _heads(
        self, reading: TeacherReading, h_s: torch.Tensor, head: nn.Module
    ) -> tuple[HeadInput, HeadInput]:
        t_head = self.model.get_output_embeddings()
        return HeadInput(h_s, head.weight, head.bias), HeadInput(reading.hidden, t_head.weight, t_head.bias)

    def ce_and_kd(
        self,
        reading: TeacherReading,
        h_s: torch.Tensor,
        head: nn.Module,
        labels: torch.Tensor,
        mask: torch.Tensor,
        ce_applies: bool,
    ) -> CEKD:
        if not self.loss.kd.chunk_size:
            return super().ce_and_kd(reading, h_s, head, labels, mask, ce_applies)
        targets = labels.masked_fill(~mask if ce_applies else torch.ones_like(mask), IGNORE_INDEX)
        with gathered(head):  # ZeRO-3 only with a frozen head (dskd.config.rules)
            student, teacher = self._heads(reading, h_s, head)
            kd, ce_weight = self.loss.kd, self.loss.ce_weight
            return ce_and_kd_chunked(student, teacher, targets, kd=kd, kd_mask=mask, ce_weight=ce_weight)

    def validation_sums(
        self,
        reading: TeacherReading,
        h_s: torch.Tensor,
        head: nn.Module,
        labels: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        if not self.loss.kd.chunk_size:
            return super().validation_sums(reading, h_s, head, labels, mask)
        with gathered(head):
            student, teacher = self._heads(reading, h_s, head)
            return validation_sums_chunked(
                student, teacher, labels.masked_fill(~mask, IGNORE_INDEX), mask, kd=self.loss.kd
            )


class SharedTrunk(OnlineTeacher):
    """The teacher model with a student that shares its trunk (:mod:`dskd.models.trunk`): one teacher
    forward gives its last hidden states and the trunk's output the student continues from."""

    def __init__(self, model: nn.Module, trunk: Trunk, loss: LossConfig, dtype: str) -> None:
        super().__init__(model, loss, dtype)
        self.trunk = trunk

    def read(self, batch: TokenBatch) -> TeacherReading:
        self.model.eval()  # the trunk runs as the teacher's, also after the student's .train()
        hidden, trunk = self.trunk.teacher_states(batch["input_ids"], batch["attention_mask"])
        return TeacherReading(hidden, trunk=trunk)


class CrossTokenizerTeacher(OnlineTeacher):
    """The teacher model on its own tokenization of a cross-tokenizer batch's text: KD is ``alpha *``
    :func:`dskd.losses.uld.uld_loss` (loss.kd.divergence uld or uld_hybrid; ``match``: the tokens both
    vocabularies spell alike, which uld_hybrid needs) of the student's logits over the aligned spans,
    without the tau^2 factor (as GOLD). The two models share no vocabulary, so no position has a
    teacher top-1 token the student could agree with: ``val/top1_agreement`` is 0."""

    def __init__(self, model: nn.Module, loss: LossConfig, dtype: str, match: VocabMatch | None) -> None:
        super().__init__(model, loss, dtype)
        self.match = match

    def read(self, batch: TokenBatch) -> TeacherReading:
        ids, mask = batch["teacher_input_ids"], batch["teacher_attention_mask"]
        with torch.no_grad():
            out = self.model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
        spans = SpanTargets(
            batch["teacher_labels"], batch["teacher_span"], batch["labels"], batch["student_span"]
        )
        return TeacherReading(out.last_hidden_state, spans=spans)

    def kd(self, reading: TeacherReading, student_logits: torch.Tensor, mask: torch.Tensor) -> KDTerm:
        sp = reading.spans
        with torch.no_grad():
            logits_t = self.model.get_output_embeddings()(reading.hidden)
        student = SpanSide(student_logits, sp.student_labels, sp.student_span)
        teacher = SpanSide(logits_t, sp.teacher_labels, sp.teacher_span)
        value = self.loss.kd.alpha * uld_loss(student, teacher, self.loss.kd, self.match)
        return KDTerm(value, torch.full_like(sp.student_labels, -1))


class _Cached(TeacherSignal):
    """A teacher cache (``teacher.mode=cached``): no teacher forward runs."""

    def __init__(self, cache: CachedTeacher, loss: LossConfig) -> None:
        super().__init__(loss)
        self.cache = cache

    def read(self, batch: TokenBatch) -> TeacherReading:
        out = self.cache.lookup(batch["input_ids"], batch["attention_mask"])
        return TeacherReading(out.hidden, out.targets, out.hidden_stored)

    def sense_states(self, reading: TeacherReading, batch: SenseBatch) -> torch.Tensor:
        if reading.hidden_stored is not None and "sense_pos" in batch:
            _check_sense_positions_stored(batch, reading.hidden_stored)
        return reading.hidden


class CachedTopK(_Cached):
    """The cache's top-k logits and tail mass: KD on k + 1 categories, a lower bound of forward KL
    that is exact for k = V (:mod:`dskd.losses.topk`)."""

    def kd(self, reading: TeacherReading, student_logits: torch.Tensor, mask: torch.Tensor) -> KDTerm:
        top = reading.distribution
        return KDTerm(topk_kd_loss(student_logits, top, mask, kd=self.loss.kd), top.indices[..., 0])


class CachedSamples(_Cached):
    """Tokens the cache drew from the teacher: an unbiased estimate of forward-KL KD
    (:mod:`dskd.losses.sampled`)."""

    def kd(self, reading: TeacherReading, student_logits: torch.Tensor, mask: torch.Tensor) -> KDTerm:
        samples = reading.distribution
        return KDTerm(sampled_kd_loss(student_logits, samples, mask, kd=self.loss.kd), samples.top1)


def _check_sense_positions_stored(batch: SenseBatch, stored: torch.Tensor) -> None:
    """Refuse a batch whose drawn P1 positions have no cached teacher hidden state (the cache's
    hidden_tokens were checked against the run's at open: this only catches a damaged cache)."""
    pos, on = batch["sense_pos"].long(), batch["sense_pos_mask"].bool()
    missing = on & ~stored.gather(1, pos)
    if missing.any():
        raise ConfigError(
            f"{int(missing.sum())} sense-loss positions of this batch have no teacher hidden state in the "
            "teacher cache (cache.hidden_positions=sense covers only targets with senses or "
            "neighbours of the lexicon and sense dictionary it was built with); rebuild the cache with "
            "`dskd cache build CONFIG` or cache.hidden_positions=all."
        )


class Signals(NamedTuple):
    data: TeacherSignal
    """The signal of the data's batches."""
    on_policy: TeacherSignal | None
    """The signal of the student's own continuations, which no cache holds: the live teacher (None
    when no batch is on-policy and no teacher runs)."""


def teacher_signals(
    teacher: TeacherConfig,
    model: nn.Module | None,
    cache: CachedTeacher | None,
    loss: LossConfig,
    on_policy: bool,
    trunk: Trunk | None = None,
) -> Signals:
    """The signals of ``teacher.mode`` from the teacher ``model`` (online, or cached with on-policy
    batches) or its ``cache`` (cached); the live teacher runs the ``trunk`` a student shares with it."""
    if teacher.mode == "online" and model is None:
        raise ConfigError("teacher.mode=online needs the teacher model.")
    if teacher.mode == "cached" and on_policy and model is None:
        raise ConfigError(
            "teacher.mode=cached with data.on_policy.fraction > 0 needs the teacher model too: it scores "
            "the student's generated text, which the cache cannot hold."
        )
    if teacher.mode == "cached" and cache is None:
        raise ConfigError(
            "teacher.mode=cached needs the teacher cache (dskd.teacher_cache.build.open_cache); build it "
            "with `dskd cache build CONFIG`."
        )
    live = OnlineTeacher(model, loss, teacher.dtype) if model is not None else None
    if trunk is not None:
        live = SharedTrunk(model, trunk, loss, teacher.dtype)
    if teacher.mode == "online":
        return Signals(live, live)
    cached = CachedSamples(cache, loss) if cache.meta["targets"] == "sampled" else CachedTopK(cache, loss)
    return Signals(cached, live)


def cross_tokenizer_signals(
    teacher: TeacherConfig, model: nn.Module | None, loss: LossConfig, match: VocabMatch | None
) -> Signals:
    """The signals of a cross-tokenizer run: the online teacher ``model`` on its own tokenization
    (the teacher cache is refused when the config loads, dskd.config.rules)."""
    if teacher.mode != "online" or model is None:
        raise ConfigError(
            f"loss.kd.divergence={loss.kd.divergence} (cross-tokenizer KD) needs teacher.mode=online and "
            "the teacher model."
        )
    live = CrossTokenizerTeacher(model, loss, teacher.dtype, match)
    return Signals(live, live)
