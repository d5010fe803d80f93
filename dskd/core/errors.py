"""User-facing errors: one actionable paragraph, exit status 2, no library traceback."""


class DSKDError(Exception):
    """An error caused by the user's input or environment, with advice on how to fix it.

    The CLI prints ``str(error)`` as one paragraph and exits with status 2.
    """

    exit_code = 2


class ConfigError(DSKDError):
    """A config file, key or value is wrong."""


class AssetError(DSKDError):
    """An asset is missing, corrupt or cannot be fetched."""


class ArtifactMismatchError(DSKDError):
    """An artifact was built for another teacher, tokenizer or data than the one in use."""


class TrainingInterrupted(DSKDError):
    """A run was stopped by SIGTERM or Ctrl-C after saving its checkpoint (exit status 143 for SIGTERM,
    130 for SIGINT: 128 + the signal's number, as the shell reports a process the signal ended)."""

    exit_code = 143
