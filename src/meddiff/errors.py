"""Exceptions raised at meddiff's boundaries.

Every error names the offending file or value and what was expected, so a user can fix
their input without reading a traceback.
"""

from __future__ import annotations


class MeddiffError(Exception):
    """Base class for errors meddiff reports to the user (the CLI prints them without a traceback)."""


class InputError(MeddiffError, ValueError):
    """A file, folder or array the user gave cannot be used (corrupt, wrong shape, NaN, ...)."""


class ConfigError(MeddiffError, ValueError):
    """A configuration key or value is unknown or of the wrong type."""


class CheckpointError(MeddiffError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the model/task it is loaded into."""


class TrainingError(MeddiffError, RuntimeError):
    """Training cannot continue (e.g. the loss became NaN)."""
