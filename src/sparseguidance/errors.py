"""The errors a user can cause; the command line prints them as one line and exits with code 2."""


class SparseGuidanceError(Exception):
    """Base class of every error that names a problem in the user's input."""


class ConfigError(SparseGuidanceError, ValueError):
    """A bad setting: unknown key, value out of range, unknown model name."""


class CheckpointError(SparseGuidanceError):
    """A checkpoint that is missing, corrupt, truncated or does not fit the model."""


class DataError(SparseGuidanceError):
    """A dataset that is missing or has the wrong shape, channel count or classes."""


class TrainingError(SparseGuidanceError):
    """A run that cannot go on: its loss or weights are no longer finite (diverged)."""
