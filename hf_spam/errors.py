"""The errors a user can act on. Each message names the file, folder or option at fault and what to do,
so ``hf-spam`` prints it alone, without a traceback, and exits with the error's ``exit_status``: 2 for what the
user gave; where the machine or the network failed them, BSD's sysexits.h codes: 74 (``EX_IOERR``: a full or
read-only disk), 69 (``EX_UNAVAILABLE``: the Hub did not take an upload)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path


class HfSpamError(Exception):
    """Bad input or an unusable file or folder, described for the person who gave it.

    ``command_line`` is the same message for a user of ``hf-spam``, where what to do is an option (``--data_file``),
    not a Python argument (``data_file=``); ``str(error)`` stays the Python message."""

    exit_status = 2

    def __init__(self, message: str, *, command_line: str | None = None) -> None:
        super().__init__(message)
        self.command_line = command_line or message


class DataError(HfSpamError, ValueError):
    """Bad input data: the message names the file, line or field, and what to do."""


class CacheError(HfSpamError):
    """The prefix cache cannot be written or read: the message names the folder and the option."""


class CheckpointError(HfSpamError, ValueError):
    """A checkpoint cannot be resumed from: the message names the folder, the file and what to do."""


class ModelNotFoundError(HfSpamError, OSError):
    """A model given by name is neither a local folder nor a loadable Hub id: the message says which was tried."""


class UnusableModelError(HfSpamError, OSError):
    """A model folder that exists but cannot be used as saved (damaged or edited files, another vocabulary)."""


class DownloadError(HfSpamError, RuntimeError):
    """A file hf_spam fetches at run time (GPT-2's BPE files) could not be had: the message names the URL and the
    local alternative."""


class TrainingError(HfSpamError):
    """Training produced something that must not be saved (NaN weights): the message says what to change."""


class OptionError(HfSpamError, ValueError):
    """Options that cannot work together: the message names them and what to pass instead."""


class DiskError(HfSpamError, OSError):
    """A folder could not be written for a reason of the machine's (full, read-only, over quota): the message names
    the folder, its option and the reason. A script can tell it from a user's mistake by the exit status."""

    exit_status = 74


class HubError(HfSpamError):
    """The Hub refused or dropped an upload: the message names the repo, the reason, where the run is kept and how to
    upload it again."""

    exit_status = 69


# what the operating system's refusal means to the person who chose the folder
DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EFBIG: "a file would exceed the file system's (or the process's) size limit",
}


# how the libraries that write model files report a failed write in errors of their own
WRITE_FAILED = re.compile(r"os error \d+|write failed|iostream error|I/O error|No space left|Read-only file system")


@contextlib.contextmanager
def disk_errors(folder: str | Path, option: str, written: str = "") -> Iterator[None]:
    """Turn the OS's refusal to write into ``folder`` (given as ``option``) into a :class:`DiskError`; any other
    error passes through unchanged. ``written`` says what is left behind (e.g. "nothing was written")."""
    try:
        yield
    except Exception as error:
        why = disk_refusal(error, folder)
        if why is None:
            raise
        left = f"; {written}" if written else ""
        raise DiskError(
            f"{option} {folder}: cannot write there ({why}){left}. Free space or fix its permissions, or choose another {option}."
        ) from error


def disk_refusal(error: Exception, folder: str | Path) -> str | None:
    """Why the OS refused a write, if ``error`` is such a refusal: an ``OSError`` says it by its errno. safetensors,
    ``torch.save`` and OpenVINO's writer wrap it in errors of their own, with the OS's words (``No space left on device
    (os error 28)``) or without them (``file write failed``, ``iostream error``): for those the file system is asked
    whether it is read-only, and otherwise the failed write is named as it was reported."""
    if isinstance(error, OSError):
        return DISK_ERRNOS.get(error.errno)
    text = str(error)
    if not (isinstance(error, RuntimeError) or type(error).__name__ == "SafetensorError") or not WRITE_FAILED.search(text):
        return None
    for number, why in DISK_ERRNOS.items():
        if os.strerror(number) in text:
            return why
    existing = next((p for p in (Path(folder), *Path(folder).parents) if p.exists()), None)
    if existing is not None and os.statvfs(existing).f_flag & os.ST_RDONLY:
        return DISK_ERRNOS[errno.EROFS]
    return f"a write failed: {text.strip().splitlines()[0][:120]}; the disk may be full"
