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


class FieldError(InputError):
    """A setting of a request has a value that cannot be used. The library names the setting by its field
    (``steps``, ``sr_factor``); a command names it by its flag (``--steps``, ``--sr-factor``: `as_flag`).

    str(e) is "<field> <value>: <expected>" ("<field> <expected>" when value is None)."""

    def __init__(self, field: str, value: object, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(self.message(field))

    def message(self, name: str) -> str:
        return f"{name} {self.expected}" if self.value is None else f"{name} {self.value}: {self.expected}"

    def as_flag(self, flags: "dict[str, str] | None" = None) -> InputError:
        """The same error naming the command-line flag of the field: flags[field], else --field-with-dashes."""
        flag = (flags or {}).get(self.field) or "--" + self.field.replace("_", "-")
        return InputError(self.message(flag))
