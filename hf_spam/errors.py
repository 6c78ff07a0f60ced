"""The errors a user can act on. Each message names the file, folder or option at fault and what to do,
so ``hf-spam`` prints it alone, without a traceback, and exits with status 2."""

from __future__ import annotations


class HfSpamError(Exception):
    """Bad input or an unusable file or folder, described for the person who gave it.

    ``command_line`` is the same message for a user of ``hf-spam``, where what to do is an option (``--data_file``),
    not a Python argument (``data_file=``); ``str(error)`` stays the Python message."""

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
