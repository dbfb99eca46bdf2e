"""Errors that are the user's to fix (a recipe, a data file, a run directory): the CLI prints the message alone and
exits 2. Anything else is a bug or an environment failure: the CLI prints one line and writes the traceback to a
log file (selfimprove.cli)."""


class UserError(Exception):
    """A problem with what the user gave; the message names the field, file or folder and the fix."""


class DataError(UserError):
    """A data file that cannot be used as it is (unreadable, a missing column, an empty or null value)."""


class RunDirError(UserError):
    """A run directory that must not be used as asked (not a run, locked, read-only, corrupted)."""


class MissingExtra(UserError, ImportError):
    """An optional dependency the recipe needs is not installed; the message says what to install."""
