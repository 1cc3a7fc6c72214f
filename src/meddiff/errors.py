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
    """A setting of a request has a value that cannot be used. The library names settings by their fields
    (``steps``, ``sr_factor``); a command names them by their flags (``--steps``, ``--sr-factor``: `as_flag`).

    str(e) is "<field> <value>: <expected>" ("<field> <expected>" when value is None), or `text` when given (a
    message of another shape); `expected` and `text` may name settings as ``{field}``, written as the field
    here and as its flag by as_flag."""

    def __init__(self, field: str, value: object = None, expected: str = "", *, text: str | None = None):
        self.field, self.value, self.expected, self.text = field, value, expected, text
        super().__init__(self.message(lambda name: name))

    def message(self, name_of) -> str:
        """The message with every setting named by name_of(field)."""
        import re

        if self.text is None:
            head = "{" + self.field + "}"
            template = f"{head} {self.expected}" if self.value is None else f"{head} {self.value}: {self.expected}"
        else:
            template = self.text
        return re.sub(r"\{([a-z_]+)\}", lambda m: name_of(m.group(1)), template)

    def as_flag(self, flags: "dict[str, str] | None" = None) -> InputError:
        """The same error naming command-line flags: flags[field], else --field-with-dashes."""
        return InputError(self.message(lambda name: (flags or {}).get(name) or "--" + name.replace("_", "-")))


def flag_errors(run):
    """A command's run(args) whose FieldErrors (settings named by field, by the library) are re-raised
    naming the command's flags (FieldError.as_flag)."""
    import functools

    @functools.wraps(run)
    def wrapped(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        except FieldError as e:
            raise e.as_flag() from None

    return wrapped
