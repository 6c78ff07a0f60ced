"""What every ``hf-spam`` subcommand shares: its parser (one flag style, errors on one line), logging, and the
handler that turns a user's mistake into one line and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import HfSpamError


class OneLineErrors:
    """argparse reports a bad option as its usage plus the error; here the error alone, on one line, status 2, and an
    unknown option is named with the nearest one (prefixes are not taken: ``allow_abbrev=False``, so a typo never
    becomes another option)."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments: "):
            message = unknown_options(message.removeprefix("unrecognized arguments: ").split(), self._option_string_actions)
        self.exit(2, f"{self.prog}: error: {message}\n")


def unknown_options(tokens: Iterable[str], options: Iterable[str]) -> str:
    """``--data_fiel is not an option; did you mean --data_file?``, or the values no option takes."""
    tokens = list(tokens)
    unknown = [token.split("=", 1)[0] for token in tokens if token.startswith("-")]
    if not unknown:
        return (
            f"values no option takes: {' '.join(tokens)}. Each option takes one value unless its --help says otherwise "
            "(--train_file, --validation_file and --test_file take one file each; put several in one file or a folder, "
            "see --dataset_name)."
        )
    nearest = difflib.get_close_matches(unknown[0], [o for o in options if o.startswith("--")], n=1, cutoff=0.6)
    hint = f"; did you mean {nearest[0]}?" if nearest else " (see --help)."
    return f"{unknown[0]} is not an option{hint}"


class Parser(OneLineErrors, argparse.ArgumentParser):
    """An argparse parser named ``hf-spam <command>``, its docstring and examples shown by ``--help``; options are
    written with underscores (HfArgumentParser's style) and accepted with hyphens too."""

    def __init__(self, command: str, doc: str) -> None:
        super().__init__(
            prog=f"hf-spam {command}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
        )

    def add_option(self, name: str, *other_names: str, **kwargs) -> argparse.Action:
        hyphenated = name.replace("_", "-")
        return self.add_argument(name, *([hyphenated] if hyphenated != name else []), *other_names, **kwargs)


def report_errors(function: Callable[[], object]) -> object:
    """``function()``; an :class:`~hf_spam.errors.HfSpamError` (its message names the input and what to do) is
    logged alone, without a traceback, and the process exits with its status (2: the user's input; 74: the disk).
    Under a launcher every process meets the same mistake in the same input: process 0 says it, the others exit."""
    try:
        return function()
    except HfSpamError as error:
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0:
            logging.getLogger("hf_spam").error("%s", error.command_line)
        elif error.exit_status != HfSpamError.exit_status:  # the machine's (disk, Hub): it may be this process's alone
            logging.getLogger("hf_spam").error("rank %d: %s", rank, error.command_line)
        # else a mistake in what every process was given (torchrun, accelerate launch): process 0 says it once
        tell_the_launcher(error.command_line)
        sys.exit(error.exit_status)


def tell_the_launcher(message: str) -> None:
    """torch's elastic launchers (``torchrun``, ``accelerate launch``) summarize a failed process from the error file
    they name in ``TORCHELASTIC_ERROR_FILE`` (the JSON of torch's ``@record``); without one, the summary's root cause
    says only to see torch's documentation. Here it is the one line, where ``@record`` would put a traceback."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    report = {"message": {"message": message, "extraInfo": {"py_callstack": message, "timestamp": str(int(time.time()))}}}
    with contextlib.suppress(OSError):  # the launcher then summarizes without it, as it would anyway
        Path(path).write_text(json.dumps(report))


def log_warnings() -> None:
    """Warnings and errors on stderr, nothing else (stdout holds the command's answer): no loading bars either."""
    from transformers.utils.logging import disable_progress_bar

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    disable_progress_bar()
