"""Known third-party noise in a run's log, silenced where it starts: each message is matched exactly and
dropped for a reason given below; everything else those libraries say still shows.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

LITLOGGER_TIP = ("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud logging")
"""Lightning's advertisement for its hosted logger, printed by every Trainer without one (ours log to CSV
and W&B)."""

DEEPSPEED_ON_CPU = ("DeepSpeed", "Setting accelerator to CPU.")
"""DeepSpeed's guess on a machine without a GPU, printed when accelerate imports it to unwrap a model in
``save_pretrained`` (an export, which never runs DeepSpeed)."""

LM_EVAL_LOADED_MODEL = (
    ("lm_eval.models.huggingface", "`pretrained` model kwarg is not of type `str`."),
    ("lm_eval.models.huggingface", "Passed an already-initialized model through `pretrained`"),
)
"""lm-eval's warnings when it is given a loaded model, as the evaluation does (in one process, so that the
teacher and the students go through the project's own loader)."""

LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
"""torch 2.13 deprecates a check Lightning 2.6's ``_pytree`` makes on every fit; nothing to change on our
side."""

EVAL_MODE_AT_START = r"Found \d+ module\(s\) in eval mode at the start of training"
"""Lightning's warning when a module of the trained model is in eval mode: in a shared trunk the teacher's
frozen layers are, by design (no dropout in the targets)."""

SRUN_UNUSED = r"The `srun` command is available on your system but is not used"
"""Lightning's hint, on any machine with SLURM's ``srun``, that a job's processes be started by srun (else
they hang waiting for each other): a run of one process starts no others (``dskd slurm`` uses srun)."""


class _DropMessages(logging.Filter):
    """Drops the records whose message starts with one of ``prefixes``."""

    def __init__(self) -> None:
        super().__init__()
        self.prefixes: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(tuple(self.prefixes))


def drop_message(logger_and_prefix: tuple[str, str]) -> None:
    """Drop the records of the logger named first whose message starts with the second (idempotent; the
    filter stays when the library later sets its logger's level or handlers)."""
    name, prefix = logger_and_prefix
    logger = logging.getLogger(name)
    found = [f for f in logger.filters if isinstance(f, _DropMessages)]
    drop = found[0] if found else _DropMessages()
    if not found:
        logger.addFilter(drop)
    drop.prefixes.add(prefix)


def quiet_lightning(one_process: bool) -> None:
    """Before a Trainer is built: no litlogger tip, no LeafSpec deprecation, and for a run of
    ``one_process`` no srun hint (for the rest of the process: its runs share one layout)."""
    drop_message(LITLOGGER_TIP)
    warnings.filterwarnings("ignore", message=LEAFSPEC, category=FutureWarning)
    if one_process:
        warnings.filterwarnings("ignore", message=SRUN_UNUSED)


@contextlib.contextmanager
def eval_modules_intended(intended: bool) -> Iterator[None]:
    """Around ``trainer.fit``: Lightning's eval-mode warning silenced when ``intended`` (a shared trunk)."""
    if not intended:  # the filters of the process stay untouched
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=EVAL_MODE_AT_START)
        yield
