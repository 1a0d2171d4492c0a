"""Errors that end a run with one line (`error: ...`) instead of a traceback."""


class HybridlearnError(ValueError):
    """Base class: the message names the key or file and says what to do."""


class ConfigError(HybridlearnError):
    """A config value is missing, out of range or inconsistent."""


class DataError(HybridlearnError):
    """A data file is missing, corrupt or malformed."""


class TrainingError(HybridlearnError):
    """Training went wrong in a way the user can act on (a loss that is NaN or infinite)."""
