"""The experiment config schema: one typed dataclass per stage, composed into one config.

Every stage reads the same experiment YAML and uses its own section, so one file describes a run
from lexicon to evaluation. Keys are documented where they are defined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omegaconf import OmegaConf

from dskd.config.ranges import ranged
from dskd.core.io import write_text_atomic
from dskd.data.config import DataConfig
from dskd.evaluation.config import EvalConfig
from dskd.lexicon.config import LexiconConfig
from dskd.losses.config import LossConfig
from dskd.models.config import StudentConfig, TeacherConfig
from dskd.senses.config import SensesConfig
from dskd.teacher_cache.config import CacheConfig
from dskd.training.config import LoggingConfig, OptimConfig, TrainerConfig


def row_name(label: str, method: str) -> str:
    """How results tables name a run's students: ``label``, else ``method`` in capitals (KD, DSKD)."""
    return label or method.upper()


@dataclass
class ExperimentConfig:
    name: str = "tiny-dskd"
    """Run name (W&B run name, folder under runs_dir)."""
    preset: str = "tiny"
    """The preset (or sweep) the run belongs to: W&B group, and the folder of artifacts, runs and results
    (`family` before 0.2: still read, with a message)."""
    method: Literal["kd", "dskd"] = "dskd"
    """kd (CE + KD) | dskd (CE + KD + sense loss)."""
    label: str = ""
    """Row name of the run in results tables and plots (empty: the method in capitals, KD or DSKD);
    e.g. DSKD+ for the DSKD variant with teacher-relative sense terms (docs/losses.md)."""
    seed: int = ranged(0, ge=0, le=2**32 - 1)
    """Seed of everything random (data order, sampling, initialisation)."""
    artifacts_dir: str = "artifacts/${preset}"
    """Root of the shared artifacts of a preset (lexicon, senses, teacher cache)."""
    runs_dir: str = "runs/${preset}"
    """Root of training runs (checkpoints, logs, exported students)."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    lexicon: LexiconConfig = field(default_factory=LexiconConfig)
    senses: SensesConfig = field(default_factory=SensesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def row_name(self) -> str:
        """The run's name in results tables and plots: its ``label``, else its method in capitals."""
        return row_name(self.label, self.method)

    def to_yaml(self) -> str:
        """The resolved config as YAML (what ``config.yaml``, checkpoints and stamps record)."""
        return OmegaConf.to_yaml(OmegaConf.structured(self))

    def save(self, directory: str | Path, name: str = "config.yaml") -> Path:
        """Write the resolved config next to an artifact (atomically) and return its path."""
        path = Path(directory) / name
        write_text_atomic(path, self.to_yaml())
        return path
