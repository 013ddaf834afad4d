"""One base class for the errors a user can fix (bad input, missing file, wrong config).

The CLI prints these as one line and exits 2; anything else is a bug and keeps its
traceback. Subclasses also derive from the built-in error they refine (``ValueError``,
``FileNotFoundError``), so callers that catch those keep working.
"""

import errno
import os
import re
from contextlib import contextmanager


class FluxSRError(Exception):
    """An error whose message tells the user what to change."""


class UsageError(FluxSRError, ValueError):
    """A value given to fluxsr (argument, knob, option) that cannot be used; the message names it."""


class InputNotFoundError(FluxSRError, FileNotFoundError):
    """A file or folder that fluxsr was pointed at is not there, or an upstream stage has not run."""


class StorageFullError(FluxSRError, OSError):
    """An output could not be written whole (disk full, file-size limit); nothing partial is left."""


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over the file-size limit


@contextmanager
def storage_full(what: str, where: str, kept: str = "finished work is kept, nothing half-written remains"):
    """Turn a write that ran out of space into a ``StorageFullError`` naming ``what`` and where to free space.

    The caller removes its partial output (or leaves it marked unfinished) before the error reaches it."""
    try:
        yield
    except StorageFullError:
        raise
    except Exception as err:
        code = _errno_of(err)
        if code in FULL:
            raise StorageFullError(code, f"could not finish writing {what} ({os.strerror(code)}); free space under "
                                         f"{where} and re-run: {kept}") from err
        raise


def _errno_of(err: Exception) -> int | None:
    """An OSError's errno, or the one a Rust writer (safetensors) puts in its message: "... (os error 28)"."""
    if isinstance(err, OSError):
        return err.errno
    found = re.search(r"\(os error (\d+)\)", str(err))
    return int(found.group(1)) if found else None


class UnreadableImageError(FluxSRError, ValueError):
    """An input file that is not an image fluxsr can read (the message names the file and why)."""
