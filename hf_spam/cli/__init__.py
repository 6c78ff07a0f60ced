"""``hf-spam``: the installed command (``[project.scripts]``), one subcommand per module of this package.

``python -m hf_spam.cli <command>`` is the same command, for launchers that take a module
(``accelerate launch -m hf_spam.cli train ...``, ``torchrun -m hf_spam.cli train ...``)."""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import PackageNotFoundError, version

# name: what it does (the subcommand's module is hf_spam.cli.<name>)
COMMANDS = {
    "train": "finetune the book's GPT as a text classifier (chapter 6's recipe by default)",
    "classify": "classify texts with a finetuned model (a saved folder or a Hub id)",
    "export": "export a finetuned model for ONNX Runtime or OpenVINO (optionally int8)",
    "cache": "list and prune the prefix cache that training leaves on disk",
    "demo": "a Gradio app around a finetuned model, or a Hugging Face Space folder for one",
    "experiments": "chapter 6's bonus table of experiments (rows 1-19)",
    "benchmark": "time the book recipe against transformers' GPT-2 + Trainer",
}
USAGE = (
    "usage: hf-spam <command> [options]    (hf-spam <command> --help: its options and examples; hf-spam --version)\n\ncommands:\n"
    + "\n".join(f"  {name:<12} {what}" for name, what in COMMANDS.items())
)
EXAMPLES = """
examples:
  hf-spam train --output_dir runs/spam
  hf-spam classify runs/spam "You won a free prize! Text WIN to 80080" "See you at 5?"
  hf-spam cache list
  hf-spam demo runs/spam
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        print(f"hf-spam {_version()}")
        sys.exit(0)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n" + EXAMPLES, file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"hf-spam: error: no command {command!r}; choose one of {', '.join(COMMANDS)} (hf-spam --help).", file=sys.stderr)
        sys.exit(2)
    try:
        importlib.import_module(f"{__name__}.{command}").main(rest)
    except BrokenPipeError:
        # the reader went away (`hf-spam classify ... | head -1`): stop quietly, as cat does; stdout goes to /dev/null so
        # that the interpreter's last flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _version() -> str:
    try:
        return version("hf_spam")
    except PackageNotFoundError:  # run from a clone that was never installed
        return "(not installed)"
