"""The lexicon and sense dictionary of a preset for the benchmarks that need them, from the assets alone.

`dskd reproduce` leaves them in the preset's ``artifacts/`` folders; a fresh clone has none. A benchmark
takes the preset's own when their stamps say they were built for the preset's current settings, and
otherwise builds both once per process into a temporary folder (removed at exit). In quick mode that
build gathers the sense rows over :data:`QUICK_SENSE_TOKENS` tokens instead of the preset's
``senses.max_tokens`` (a smaller dictionary, built in seconds instead of minutes).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

QUICK_SENSE_TOKENS = 6_000
_BUILT: dict[tuple[str, bool], tempfile.TemporaryDirectory] = {}
"""The folders this process built, by (sense-dictionary stage key, quick)."""


def preset_artifacts(cfg, quick: bool):
    """``cfg`` reading a lexicon and a sense dictionary built for its settings (see the module)."""
    from dskd.core.stamps import is_current
    from dskd.launch.reproduce import artifact_keys

    lex_key, senses_key = artifact_keys(cfg.lexicon, cfg.senses, cfg.teacher)
    if is_current(cfg.lexicon.output_dir, lex_key) and is_current(cfg.senses.output_dir, senses_key):
        return cfg
    if quick:
        tokens = min(cfg.senses.max_tokens or QUICK_SENSE_TOKENS, QUICK_SENSE_TOKENS)
        cfg = dataclasses.replace(cfg, senses=dataclasses.replace(cfg.senses, max_tokens=tokens))
    if (senses_key, quick) not in _BUILT:
        _BUILT[senses_key, quick] = _build(cfg)
    return _artifacts_in(cfg, Path(_BUILT[senses_key, quick].name))


def _build(cfg) -> tempfile.TemporaryDirectory:
    """A temporary folder holding the lexicon and the sense dictionary of ``cfg``."""
    from dskd.lexicon.build import build as build_lexicon
    from dskd.senses.build import build as build_senses

    tmp = tempfile.TemporaryDirectory(prefix="dskd-bench-")
    t0 = time.perf_counter()
    built = _artifacts_in(cfg, Path(tmp.name))
    build_lexicon(built)
    build_senses(built, progress=False)
    print(
        f"    built the lexicon and sense dictionary ({cfg.senses.max_tokens} tokens) into {tmp.name} "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return tmp


def _artifacts_in(cfg, root: Path):
    """``cfg`` with its lexicon and sense dictionary under ``root``."""
    return dataclasses.replace(
        cfg,
        lexicon=dataclasses.replace(cfg.lexicon, output_dir=str(root / "lexicon")),
        senses=dataclasses.replace(cfg.senses, output_dir=str(root / "senses")),
    )
