"""SLURM job submission: render the sbatch template of a multi-node training job and submit it.

``dskd slurm submit`` fills an sbatch template (the packaged ``dskd/resources/slurm/train.sbatch``,
also in ``experiments/slurm/`` to copy and edit; see
:func:`render_template` for its placeholders) and submits it. The job runs one ``srun`` task per
device; each task is one Lightning process (``dskd train``) whose in-job SLURM pieces (ranks,
requeue on SIGUSR1, resume) live in :mod:`dskd.training.slurm`.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dskd.core.errors import ConfigError, DSKDError
from dskd.resources import resource

TEMPLATE = resource("slurm", "train.sbatch")
"""The default sbatch template (copy it and pass ``--template`` to change partitions, modules, ...)."""
MANAGED_KEYS = ("trainer.num_nodes", "trainer.devices", "trainer.accelerator", "trainer.resume")
"""Config keys the job sets itself (from --nodes / --gpus-per-node / --tasks-per-node)."""
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_PLAIN = re.compile(r"[\w@%+=:,./-]+")
"""Words that need no quoting, in the shell (shlex's safe set) or in an #SBATCH directive."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
Value = int | str | Path | list[str] | None
"""A placeholder value: None drops the line; a list is an argv (its words quoted one by one)."""


@dataclass(frozen=True)
class JobSpec:
    """What one sbatch job asks for and runs."""

    job_name: str
    nodes: int
    tasks_per_node: int
    """One task per device: GPUs per node, or CPU processes per node when there are no GPUs."""
    gpus_per_node: int
    cpus_per_task: int
    """CPU cores per task: the training process and its data-loader workers."""
    mem: str | None
    """Memory per node in sbatch's format (``0``: all of each node's memory; None: the partition's
    default)."""
    wandb_mode: str
    """WANDB_MODE of the job: online | offline | disabled."""
    partition: str | None
    time: str | None
    """Time limit in any sbatch format (e.g. 2-00:00:00); None: the partition's default."""
    workdir: Path
    """Folder the job runs in (relative config paths resolve against it)."""
    log_dir: Path
    command: list[str]
    """What each srun task runs."""

    def __post_init__(self) -> None:
        check_shape(self.nodes, self.tasks_per_node, self.gpus_per_node, self.cpus_per_task)
        check_mem(self.mem)
        if self.wandb_mode not in WANDB_MODES:
            raise ConfigError(f"WANDB_MODE must be one of {', '.join(WANDB_MODES)}, not {self.wandb_mode!r}.")

    @property
    def log_pattern(self) -> Path:
        """Where the job's output goes (%j is the job id; a requeued job appends to the same file)."""
        return self.log_dir / "%j.out"


def check_shape(nodes: int, tasks_per_node: int, gpus_per_node: int, cpus_per_task: int | None) -> None:
    """Refuse a job shape SLURM or the training cannot run, naming the flag to fix."""
    if nodes < 1:
        raise ConfigError(f"--nodes must be at least 1, got {nodes}.")
    if gpus_per_node < 0:
        raise ConfigError(f"--gpus-per-node must be 0 (CPU) or more, got {gpus_per_node}.")
    if tasks_per_node < 1:
        raise ConfigError(f"--tasks-per-node must be at least 1, got {tasks_per_node}.")
    if gpus_per_node and tasks_per_node != gpus_per_node:
        raise ConfigError(
            f"--tasks-per-node={tasks_per_node} differs from --gpus-per-node={gpus_per_node}: "
            "a GPU job runs one task per GPU. Drop --tasks-per-node (it is for CPU jobs, G=0)."
        )
    if cpus_per_task is not None and cpus_per_task < 1:
        raise ConfigError(f"--cpus-per-task must be at least 1, got {cpus_per_task}.")


_MEM = re.compile(r"[0-9]+[KMGT]?")
WANDB_MODES = ("online", "offline", "disabled")


def check_mem(mem: str | None) -> None:
    """Refuse a memory request sbatch would not read (a number, optionally with K, M, G or T)."""
    if mem is not None and not _MEM.fullmatch(mem):
        raise ConfigError(
            f"--mem={mem!r} is not a memory size sbatch reads: a number with an optional unit K, M, G or T "
            "(e.g. 480G; 0 = all of each node's memory)."
        )


def default_cpus_per_task(num_workers: int) -> int:
    """Cores per task: the training process plus its ``data.num_workers`` data-loader workers."""
    return num_workers + 1


def wandb_mode(logging_wandb: bool, env: Mapping[str, str]) -> str:
    """The job's WANDB_MODE: disabled without ``logging.wandb``; else the submitting shell's WANDB_MODE
    when set, online with a WANDB_API_KEY (the job inherits it from the environment, never the script),
    offline otherwise (compute nodes often have no network; `wandb sync` uploads later)."""
    if not logging_wandb:
        return "disabled"
    mode = env.get("WANDB_MODE", "")
    if mode:
        return "offline" if mode == "dryrun" else mode
    return "online" if env.get("WANDB_API_KEY") else "offline"


def train_overrides(nodes: int, tasks_per_node: int, gpus_per_node: int) -> list[str]:
    """The overrides a SLURM job adds to ``dskd train``: its shape and ``resume=auto``."""
    return [
        f"trainer.num_nodes={nodes}",
        f'trainer.devices="{tasks_per_node}"',  # a string key ("auto" | a count | a list)
        f"trainer.accelerator={'gpu' if gpus_per_node else 'cpu'}",
        "trainer.resume=auto",
    ]


def check_overrides(overrides: list[str]) -> None:
    """Refuse user overrides of the keys the job sets itself (they would silently disagree)."""
    for item in overrides:
        key = item.split("=", 1)[0]
        if key in MANAGED_KEYS:
            raise ConfigError(
                f"Override '{item}' is set by the SLURM job itself ({', '.join(MANAGED_KEYS)}). "
                "Use --nodes, --gpus-per-node and --tasks-per-node instead; the job always resumes "
                "(trainer.resume=auto) so that a requeued job continues from its checkpoint."
            )


def train_command(config: Path, overrides: list[str], python: str = sys.executable) -> list[str]:
    """``python -m dskd train CONFIG overrides...`` as an argv list."""
    return [python, "-m", "dskd", "train", str(config), *overrides]


def _directive_word(value: str) -> str:
    """``value`` as one argument of an ``#SBATCH`` line (sbatch reads double quotes and backslashes)."""
    if _PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quoted(name: str, value: Value, directive: bool) -> str:
    """A placeholder's value as it goes into the script: every word quoted for its line's reader."""
    words = [str(w) for w in value] if isinstance(value, list) else [str(value)]
    bad = next((w for w in words if _CONTROL.search(w)), None)
    if bad is not None:
        raise ConfigError(
            f"The value {bad!r} of sbatch placeholder '{name}' holds a control character (a newline?); "
            "remove it (from the path, name or override it comes from)."
        )
    if directive:
        if len(words) != 1:
            raise ConfigError(
                f"sbatch placeholder '{name}' is a command line; it cannot go on an #SBATCH line."
            )
        return _directive_word(words[0])
    return shlex.join(words)


def render_template(text: str, values: Mapping[str, Value]) -> str:
    """Replace ``{{ name }}`` placeholders; a line whose placeholder value is None is dropped.

    Values are quoted: with shell quoting on script lines, with sbatch's double quotes on ``#SBATCH``
    lines; a value with a control character, or a placeholder inside double quotes of a script line
    (where the shell would still expand ``$(...)``), is a :class:`ConfigError`. So is an unknown
    placeholder, so that a typo in an edited template fails early.
    """
    out = []
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        names = _PLACEHOLDER.findall(line)
        unknown = [n for n in names if n not in values]
        if unknown:
            raise ConfigError(
                f"sbatch template placeholder '{{{{ {unknown[0]} }}}}' is unknown; "
                f"known placeholders: {', '.join(sorted(values))}."
            )
        if any(values[n] is None for n in names):
            continue
        directive = line.startswith("#SBATCH")
        for m in _PLACEHOLDER.finditer(line):
            if not directive and line[: m.start()].count('"') % 2:
                raise ConfigError(
                    f"sbatch template line {lineno}: placeholder '{m.group(0)}' is inside double quotes, "
                    "where the shell would expand what its value holds; move it out of them (dskd quotes it)."
                )
        out.append(_PLACEHOLDER.sub(lambda m, d=directive: _quoted(m.group(1), values[m.group(1)], d), line))
    return "".join(out)


def render(spec: JobSpec, template: Path = TEMPLATE) -> str:
    """The sbatch script of a job, from ``template``."""
    # deferred: dskd.training.slurm imports Lightning, and `dskd slurm` checks the config before that
    from dskd.training.slurm import REQUEUE_SIGNAL, SIGNAL_SECONDS

    if not template.is_file():
        raise ConfigError(
            f"sbatch template '{template}' not found. Pass --template with an edited copy of "
            f"the default template ({TEMPLATE})."
        )
    values: dict[str, Value] = {
        "job_name": spec.job_name,
        "nodes": spec.nodes,
        "tasks_per_node": spec.tasks_per_node,
        "gpus_per_node": spec.gpus_per_node or None,
        "cpus_per_task": spec.cpus_per_task,
        "mem": spec.mem,
        "wandb_mode": spec.wandb_mode,
        "partition": spec.partition,
        "time": spec.time,
        "signal": f"{REQUEUE_SIGNAL}@{SIGNAL_SECONDS}",
        "workdir": spec.workdir,
        "log_dir": spec.log_dir,
        "log_file": spec.log_pattern,
        "command": spec.command,
    }
    return render_template(template.read_text(encoding="utf-8"), values)


def submit(script: str, spec: JobSpec) -> str:
    """Write ``script`` into the log folder and submit it with ``sbatch``; return the job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise DSKDError(
            "sbatch not found: run `dskd slurm submit` on a SLURM login node, or add --dry-run to only "
            "print the script."
        )
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    path = spec.log_dir / "job.sbatch"
    path.write_text(script, encoding="utf-8")
    out = subprocess.run([sbatch, "--parsable", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise DSKDError(f"sbatch refused the job ({path}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip().split(";")[0]
