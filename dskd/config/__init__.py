"""The typed experiment config: ``load_config(path, overrides)`` returns a checked :class:`ExperimentConfig`.

Loading (``base:`` chains, overrides, renamed keys) is in :mod:`dskd.config.loading`, the schema in
:mod:`dskd.config.schema`, value ranges in :mod:`dskd.config.ranges`, cross-key rules in
:mod:`dskd.config.rules`, the generated reference (docs/config.md) in :mod:`dskd.config.docs`.
"""

from typing import Any

__all__ = ["ExperimentConfig", "config_from_dict", "load_config"]


def __getattr__(name: str) -> Any:
    """``dskd.config.load_config`` and friends, read from their modules on first use."""
    if name not in __all__:
        raise AttributeError(f"module 'dskd.config' has no attribute {name!r}")
    # deferred: the schema imports every section module, each of which imports this package
    from dskd.config import loading

    return getattr(loading, name)
