"""The distillation LightningModule: CE + KD (+ lambda * sense loss for method=dskd).

The step reads the teacher through a :class:`~dskd.training.teacher_signals.TeacherSignal` (online,
cached top-k or cached samples) and never asks which; what each strategy needs (gradient norms,
FSDP clipping, ZeRO-3 gathering) lives in :mod:`dskd.training.strategies`, what the checkpoints
carry in :mod:`dskd.training.checkpoints`. The teacher is held outside the ``nn.Module`` tree (by
its signal, a plain object), so no optimizer, checkpoint or sharding strategy ever sees it: it stays
frozen, unsharded and replicated per device, and its signal moves it to the device. A student that
shares the teacher's trunk (:mod:`dskd.models.trunk`; ``auto``, ``ddp`` and ``fsdp``) holds the teacher's
frozen bottom as its own frozen modules; the step then runs only the student's trainable layers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn

from dskd.core.batch import SenseBatch, TokenBatch
from dskd.core.errors import ConfigError
from dskd.data.config import OnPolicyConfig
from dskd.losses.config import ULD_DIVERGENCES, LossConfig, SenseLossConfig
from dskd.losses.kd import position_mask
from dskd.losses.sense import sense_loss
from dskd.losses.uld import VocabMatch
from dskd.models.config import TeacherConfig
from dskd.models.trunk import Trunk, shared_depth
from dskd.senses.dictionary import SenseDictionary
from dskd.teacher_cache.store import CachedTeacher
from dskd.training.callbacks import check_finite, check_skip_limits
from dskd.training.checkpoints import RunCheckpoint
from dskd.training.config import OptimConfig, TrainerConfig
from dskd.training.on_policy import BatchKey, DataEnds, SenseSampler, training_batch
from dskd.training.resume import fingerprint
from dskd.training.schedule import total_optimizer_steps, warmup_cosine
from dskd.training.strategies import deepspeed_gradient_norm, gradient_norm
from dskd.training.teacher_signals import TeacherReading, cross_tokenizer_signals, teacher_signals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillationSettings:
    """The config sections the training module reads."""

    method: Literal["kd", "dskd"]
    loss: LossConfig
    optim: OptimConfig
    trainer: TrainerConfig
    teacher: TeacherConfig
    on_policy: OnPolicyConfig
    seed: int
    config: str
    """The whole experiment config as YAML: each checkpoint records it (a resume compares it)."""
    seq_len: int | None = None
    """``data.seq_len``: how long an on-policy row may grow (a batch padded to its longest sequence is
    narrower; None: the batch's width)."""


@dataclass
class DistillationParts:
    """What the module trains (``student``, ``projection``) and reads but never owns (the frozen
    ``teacher``, its ``cache``, the ``senses`` dictionary)."""

    student: nn.Module
    teacher: nn.Module | None = None
    """The teacher model: online, or cached with on-policy batches (else None)."""
    senses: SenseDictionary | None = None
    projection: nn.Module | None = None
    cache: CachedTeacher | None = None
    """The teacher cache (``dskd.teacher_cache.build.open_cache``) with ``teacher.mode=cached``."""
    generation_config: dict[str, Any] | None = None
    """The export's generation config (the teacher's; a cross-tokenizer student's own ids), stored in
    the checkpoints."""
    match: VocabMatch | None = None
    """Cross-tokenizer KD (loss.kd.divergence uld, uld_hybrid): the tokens both vocabularies spell alike."""


def sense_margin(cfg: SenseLossConfig, senses: SenseDictionary) -> float:
    """The hinge margin in MSE units: ``cfg.margin``, or the ``cfg.margin_quantile`` of the
    dictionary's teacher-state-to-unrelated-sense MSE (docs/losses.md)."""
    if cfg.margin_quantile is None:
        return cfg.margin
    margin = senses.unrelated_sense_mse_quantile(cfg.margin_quantile)
    log.info("loss.sense.margin_quantile=%s: hinge margin %.4f (MSE units)", cfg.margin_quantile, margin)
    return margin


class DistillationModule(pl.LightningModule):
    """Trains ``parts.student`` (and ``parts.projection``) against a frozen teacher.

    With ``teacher.mode=cached`` the cache gives the teacher's signal for each data batch (no teacher
    forward runs) and the teacher is None, unless ``data.on_policy.fraction > 0``: the live teacher
    scores the on-policy batches (exact KD, as online), the cache the rest.
    """

    def __init__(self, settings: DistillationSettings, parts: DistillationParts) -> None:
        super().__init__()
        if settings.method == "dskd" and parts.senses is None:
            raise ConfigError("method=dskd needs a sense dictionary (build it with `dskd senses build`).")
        self.settings = settings
        self.student = parts.student
        self.projection = parts.projection
        depth = shared_depth(parts.student, parts.teacher)
        self.trunk = Trunk(parts.student, parts.teacher, depth) if depth else None
        """The trunk the student shares with the teacher (None: the student runs its whole decoder)."""
        self.signals = _signals(settings, parts, self.trunk)
        object.__setattr__(self, "teacher", parts.teacher)  # not registered: the module never owns it
        self.senses = parts.senses
        self.generation_config = parts.generation_config
        self.sense_margin = (
            sense_margin(settings.loss.sense, parts.senses) if settings.method == "dskd" else None
        )
        self.skipped_steps = 0
        self.train_batches = 0
        """Training batches taken so far over the whole run (resumed from checkpoints): the index that
        decides which batches are on-policy (dskd.training.on_policy)."""
        self._consecutive_skips = 0
        self.total_steps: int | None = None
        """Optimizer steps of the lr schedule (set by configure_optimizers)."""
        self._val_sums: torch.Tensor | None = None
        self.checkpoint = RunCheckpoint(self, settings.teacher, settings.trainer)

    # ------------------------------------------------------------------ placement

    def _place_teacher(self) -> None:
        for signal in self.signals:
            if signal is not None:
                signal.to(self.trainer.strategy.root_device)

    def _place_senses(self) -> None:
        """A dictionary kept on a GPU moves to this process's GPU (not every process's GPU 0)."""
        senses, device = self.senses, self.trainer.strategy.root_device
        rows = getattr(senses, "rows", None)
        if rows is not None and rows.is_cuda and rows.device != device:
            self.senses = senses.to(device)

    def on_fit_start(self) -> None:
        self._place_teacher()
        self._place_senses()

    def on_validation_start(self) -> None:
        self._place_teacher()

    # ------------------------------------------------------------------ steps

    def losses(
        self, batch: TokenBatch | SenseBatch, on_policy: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(loss with gradient, detached components for the finiteness check, values to log).
        An ``on_policy`` batch (the student's own continuation) gets no CE (and logs NaN for it) and is
        scored by the live teacher, also in a cached run."""
        signal = self.signals.on_policy if on_policy else self.signals.data
        teacher = signal.read(batch)
        h_s = self._student_states(batch, teacher)
        mask = position_mask(batch["labels"], batch["attention_mask"])
        head = self.student.get_output_embeddings()
        loss, ce, kd = signal.ce_and_kd(teacher, h_s, head, batch["labels"], mask, not on_policy)
        parts = {"ce": ce, "kd": kd}
        # Lightning repeats a key's last value on steps that do not log it: NaN marks "CE did not apply"
        logs = {"train/ce": torch.full_like(ce, math.nan) if on_policy else ce, "train/kd": kd}
        if self.settings.method == "dskd":
            sense = self._sense_loss(batch, signal.sense_states(teacher, batch), h_s)
            loss = loss + self.settings.loss.sense.weight * sense["total"]
            parts["sense"] = sense["total"].detach()
            logs.update(_sense_logs(sense, batch, mask))
        parts["loss"] = loss.detach()
        logs["train/loss"] = loss.detach()
        return loss, parts, logs

    def _sense_loss(self, batch: SenseBatch, h_t: torch.Tensor, h_s: torch.Tensor) -> dict[str, Any]:
        """The sense loss of ``batch`` at the student's (projected) and the teacher's states."""
        h = self.projection(h_s) if self.projection is not None else h_s
        return sense_loss(
            h, h_t, batch, self.senses.lookup, self.settings.loss.sense, margin=self.sense_margin
        )

    def _student_states(self, batch: TokenBatch, teacher: TeacherReading) -> torch.Tensor:
        """The student's last hidden states: its trainable layers on the shared trunk's output where
        the teacher's reading holds it, else its whole decoder."""
        am = batch["attention_mask"]
        if teacher.trunk is not None:
            return self.trunk.student_states(teacher.trunk, am)
        ids = batch["input_ids"]
        return self.student.get_decoder()(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state

    def _on_policy(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(the batch to train on, on-policy values to log): see dskd.training.on_policy."""
        op, key = self.settings.on_policy, BatchKey(self.settings.seed, self.train_batches, self.global_rank)
        self.train_batches += 1
        senses = self._sense_sampler() if self.settings.method == "dskd" and op.fraction > 0 else None
        # the data's tokenizer's EOS (a chat template's end of turn), where the data module has one
        eos = getattr(getattr(self.trainer.datamodule, "tokenizer", None), "eos_token_id", None)
        return training_batch(self.student, batch, op, key, senses, DataEnds(eos, self.settings.seq_len))

    def _sense_sampler(self) -> SenseSampler:
        """The DSKD data module's sampler of an on-policy batch's sense positions."""
        dm = self.trainer.datamodule
        if not hasattr(dm, "on_policy_senses"):
            raise ConfigError(
                "method=dskd with data.on_policy.fraction > 0 needs the DSKD data module (it draws the "
                f"sense positions of the generated text); {type(dm).__name__} cannot."
            )
        return dm.on_policy_senses

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        self._place_teacher()
        batch, on_policy_logs = self._on_policy(batch)
        loss, parts, logs = self.losses(batch, on_policy=bool(on_policy_logs.get("train/on_policy")))
        logs.update(on_policy_logs)
        bs = batch["input_ids"].shape[0]
        trainer_cfg = self.settings.trainer
        finite = check_finite(parts, self.global_step, trainer_cfg.nan_policy, self.trainer.strategy)
        self._consecutive_skips = 0 if finite else self._consecutive_skips + 1
        self.skipped_steps += 0 if finite else 1
        # a skipped step logs its own (non-finite) values, flagged, never the previous step's
        self.log_dict(self._mean_over_processes(logs), on_step=True, on_epoch=False, batch_size=bs)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        flags = {"train/skipped": float(not finite), "train/skipped_steps": float(self.skipped_steps)}
        self.log_dict({"train/lr": lr, **flags}, on_step=True, batch_size=1)
        if not finite:
            skips, params = (self.skipped_steps, self._consecutive_skips), self.named_parameters()
            check_skip_limits(*skips, trainer_cfg, params, self.global_step)
            return None
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=bs)
        return loss

    @property
    def last_step_skipped(self) -> bool:
        """Whether the last training step was skipped for a non-finite loss (``nan_policy=skip``)."""
        return self._consecutive_skips > 0

    def _mean_over_processes(self, logs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The logged values averaged over all processes (one all-reduce), not rank 0's alone."""
        if self.trainer.world_size == 1:
            return logs
        device = self.trainer.strategy.root_device
        stacked = torch.stack([torch.as_tensor(v, device=device).detach().float() for v in logs.values()])
        return dict(zip(logs, self.trainer.strategy.reduce(stacked, reduce_op="mean"), strict=True))

    def on_train_batch_end(self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        norm = deepspeed_gradient_norm(self.trainer.strategy)
        if norm is not None:
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        s = self.settings
        norm = gradient_norm(self.trainer.strategy, s.trainer, s.optim.grad_clip, self.parameters())
        if norm is not None:
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = None
        self._val_sense = ValidationSense()

    def validation_step(self, batch: TokenBatch, batch_idx: int) -> None:
        self._place_teacher()
        signal = self.signals.data
        teacher = signal.read(batch)
        h_s = self._student_states(batch, teacher)
        mask = position_mask(batch["labels"], batch["attention_mask"])
        sums = signal.validation_sums(
            teacher, h_s, self.student.get_output_embeddings(), batch["labels"], mask
        )
        self._val_sums = sums if self._val_sums is None else self._val_sums + sums
        if self.settings.method == "dskd" and "sense_pos" in batch:
            self._place_senses()
            sense = self._sense_loss(batch, signal.sense_states(teacher, batch), h_s)
            self._val_sense.add(sense, batch, mask)

    def on_validation_epoch_end(self) -> None:
        if self._val_sums is None:
            return
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        ce_sum, kd_sum, agree, n = sums.tolist()
        n = max(n, 1.0)
        ce, kd = ce_sum / n, kd_sum / n
        self.log_dict(
            {
                "val/loss": self.settings.loss.ce_weight * ce + kd,
                "val/ce": ce,
                "val/kd": kd,
                "val/ppl": math.exp(min(ce, 50.0)),
                "val/top1_agreement": agree / n,
            },
            on_epoch=True,
            batch_size=1,
            sync_dist=True,  # already reduced: every process holds the same values
        )
        pooled = self._val_sense.pooled(self.trainer.strategy)
        if pooled:
            self.log_dict(pooled, on_epoch=True, batch_size=1, sync_dist=True)

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.settings.optim
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(
                "The student has no trainable parameters; raise student.trainable_top_layers above 0."
            )
        lr = o.lr * (self.trainer.world_size if o.scale_lr else 1)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=o.weight_decay)
        self.total_steps = total_optimizer_steps(self.trainer, o)
        factor = warmup_cosine(round(o.warmup_ratio * self.total_steps), self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = {
            "config": self.settings.config,
            "fingerprint": fingerprint(self.settings.config),
            "student_config": self.student.config.to_dict(),
            "tokenizer": str(self.settings.teacher.model),
            "skipped_steps": self.skipped_steps,
            "consecutive_skips": self._consecutive_skips,
            "train_batches": self.train_batches,
            "generation_config": self.generation_config,
        }
        self.checkpoint.save(checkpoint, record)

    @property
    def strict_loading(self) -> bool:
        """Lightning loads checkpoints strictly only when the student freezes nothing: a trainable-only
        checkpoint leaves the frozen weights out (FSDP loads the weights before ``on_load_checkpoint``
        runs), and :meth:`on_load_checkpoint` checks which keys a checkpoint holds instead."""
        return not self.checkpoint.frozen_keys

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the counters, after checking the checkpoint's weights fit (RunCheckpoint.load)."""
        record = self.checkpoint.load(checkpoint)
        self.skipped_steps = int(record.get("skipped_steps", 0))
        self._consecutive_skips = int(record.get("consecutive_skips", 0))
        self.train_batches = int(record.get("train_batches", 0))


def _sense_logs(sense: dict[str, Any], batch: SenseBatch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The sense loss's values to log (its terms, candidates, diagnostics, neighbour positions)."""
    logs = {f"train/sense_{k}": sense[k].detach() for k in ("pos", "neg", "rand")}
    logs["train/sense"] = sense["total"].detach()
    logs["train/candidates_per_position"] = sense["n_pos_candidates"] + sense["n_neg_candidates"]
    logs.update({f"train/sense_diag/{k}": v for k, v in sense["diagnostics"].items()})
    n_valid = mask.sum().clamp(min=1)
    logs["train/neighbour_fraction"] = batch["n_neighbour_positions"].sum().float() / n_valid
    return logs


def _signals(settings: DistillationSettings, parts: DistillationParts, trunk: Trunk | None):
    """The run's teacher signals: cross-tokenizer (loss.kd.divergence uld, uld_hybrid: the student has
    its own tokenization) or those of :func:`dskd.training.teacher_signals.teacher_signals`."""
    if settings.loss.kd.divergence in ULD_DIVERGENCES:
        return cross_tokenizer_signals(settings.teacher, parts.teacher, settings.loss, parts.match)
    on_policy = settings.on_policy.fraction > 0
    return teacher_signals(settings.teacher, parts.teacher, parts.cache, settings.loss, on_policy, trunk)


class ValidationSense:
    """The held-out batches' sense logs of one validation epoch, pooled over batches and processes."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] | None = None

    def add(self, sense: dict[str, Any], batch: SenseBatch, mask: torch.Tensor) -> None:
        """Add a held-out batch's sense loss and diagnostics (:func:`_val_sense_sums`)."""
        sums = _val_sense_sums(sense, batch, mask)
        self.sums = sums if self.sums is None else {k: v + sums[k] for k, v in self.sums.items()}

    def pooled(self, strategy) -> dict[str, float]:
        """The ``val/sense*`` logs summed over every process (:func:`_pooled_val_sense`); {} without any."""
        if self.sums is None:
            return {}
        summed = strategy.reduce(torch.stack(list(self.sums.values())), reduce_op="sum")
        return _pooled_val_sense(dict(zip(self.sums, summed.tolist(), strict=True)))


def _val_sense_sums(sense: dict[str, Any], batch: SenseBatch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """A held-out batch's share of the validation sense logs: the loss values once (``batches``
    counts them) and each diagnostic times the number of entries it is the mean of (that number
    under ``n/<name>``); the distance ratios are left to :func:`_pooled_val_sense`."""
    counts = sense["diagnostic_counts"]
    sums = {"batches": torch.ones((), device=sense["total"].device)}
    for key, value in _sense_logs(sense, batch, mask).items():
        name, value = key.removeprefix("train/sense_diag/"), value.detach().float()
        if name == key:
            sums[key.replace("train/", "val/", 1)] = value
        elif name in counts:
            sums[f"val/sense_diag/{name}"] = value * counts[name]
            sums[f"n/{name}"] = counts[name]
    for side in ("pos", "neg"):  # the batch's distance sums, squared and crossed: the ratios' spread
        s, t = sums[f"val/sense_diag/student_mse_{side}"], sums[f"val/sense_diag/teacher_mse_{side}"]
        sums.update({f"ss/{side}": s * s, f"st/{side}": s * t, f"tt/{side}": t * t})
    return sums


def _pooled_val_sense(sums: dict[str, float]) -> dict[str, float]:
    """The validation sense logs from the summed :func:`_val_sense_sums` of all held-out batches:
    the loss values are means over the batches, each diagnostic the mean over all its entries (as if
    the held-out set were one batch), the distance ratios the ratios of the pooled distances, and
    (from two batches on) their standard errors ``<side>_distance_ratio_se``
    (:func:`_ratio_standard_error`)."""
    out = {}
    for key, total in sums.items():
        name = key.removeprefix("val/sense_diag/")
        if key.startswith("val/"):
            n = sums[f"n/{name}"] if name != key else sums["batches"]
            out[key] = total / n if n > 0 else 0.0
    for side in ("pos", "neg"):
        student, teacher = (
            out[f"val/sense_diag/student_mse_{side}"],
            out[f"val/sense_diag/teacher_mse_{side}"],
        )
        out[f"val/sense_diag/{side}_distance_ratio"] = student / teacher if teacher > 0 else 0.0
        se = _ratio_standard_error(sums, side)
        if se is not None:
            out[f"val/sense_diag/{side}_distance_ratio_se"] = se
    return out


def _ratio_standard_error(sums: dict[str, float], side: str) -> float | None:
    """The standard error of a pooled distance ratio ``R = sum_b s_b / sum_b t_b`` over the held-out
    batches b (s_b, t_b: the batch's summed student and teacher distances), the batches taken as
    independent draws (the positions of a batch are not): the ratio estimator's linearised variance
    ``n / (n - 1) * sum_b (s_b - R t_b)^2 / (sum_b t_b)^2``; None below two batches or without
    teacher distances."""
    n, s, t = (
        sums["batches"],
        sums[f"val/sense_diag/student_mse_{side}"],
        sums[f"val/sense_diag/teacher_mse_{side}"],
    )
    if n < 2 or t <= 0:
        return None
    r = s / t
    spread = sums[f"ss/{side}"] - 2 * r * sums[f"st/{side}"] + r * r * sums[f"tt/{side}"]
    return math.sqrt(max(spread, 0.0) * n / (n - 1)) / t
