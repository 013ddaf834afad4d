"""One base class for the errors a user can fix (bad input, missing file, wrong config).

The CLI prints these as one line and exits 2; anything else is a bug and keeps its
traceback. Subclasses also derive from the built-in error they refine (``ValueError``,
``FileNotFoundError``), so callers that catch those keep working.
"""


class FluxSRError(Exception):
    """An error whose message tells the user what to change."""


class UsageError(FluxSRError, ValueError):
    """A value given to fluxsr (argument, knob, option) that cannot be used; the message names it."""


class InputNotFoundError(FluxSRError, FileNotFoundError):
    """A file or folder that fluxsr was pointed at is not there, or an upstream stage has not run."""


class StorageFullError(FluxSRError, OSError):
    """An output could not be written whole (disk full, file-size limit); nothing partial is left."""


class UnreadableImageError(FluxSRError, ValueError):
    """An input file that is not an image fluxsr can read (the message names the file and why)."""
