"""Finetune the book's GPT as a text classifier (chapter 6) with Trainer.

examples:
  hf-spam train --output_dir runs/spam                                   # the book's recipe
  hf-spam train --data_file path/to/SMSSpamCollection --weights random \\
      --config_overrides "n_layers=2,emb_dim=128,n_heads=2" --trainable_layers all --learning_rate 5e-4 --output_dir runs/tiny
  hf-spam train recipe.yaml                                              # every option from one file
  accelerate launch -m hf_spam.cli train ...                             # several GPUs, unchanged
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import shlex
from pathlib import Path

import datasets
import huggingface_hub
import transformers
import yaml
from transformers import HfArgumentParser

from ..errors import OptionError
from ..training.allocator import reuse_freed_memory
from ..training.arguments import DataArguments, ModelArguments
from ..training.config import SpamTrainingArguments
from ..training.recipe import run
from .common import OneLineErrors, report_errors, unknown_options

# Trainer's options that --help shows beside hf_spam's own (SpamTrainingArguments' fields, which set the book's
# recipe); --help-all shows every one of TrainingArguments' options
VERBOSE = ("-v", "--verbose")
SHOWN_TRAINER_OPTIONS = (
    "output_dir",
    "max_steps",
    "gradient_accumulation_steps",
    "warmup_steps",
    "resume_from_checkpoint",
    "bf16",
    "fp16",
    "use_cpu",
    "disable_tqdm",
    "report_to",
    "push_to_hub",
    "hub_model_id",
    "hub_private_repo",
)


class _Help(argparse.Action):
    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help(every_option=option_string == "--help-all")
        parser.exit()


class TrainParser(OneLineErrors, HfArgumentParser):
    """HfArgumentParser over the three dataclasses (``--output_dir`` and ``--output-dir`` alike), errors on one line.
    ``--help`` lists hf_spam's options and the Trainer options a run of the recipe uses; ``--help-all``, all of
    TrainingArguments' (well over a hundred, and a usage block of as many lines, which buried the recipe's own)."""

    def __init__(self) -> None:
        super().__init__(
            (ModelArguments, DataArguments, SpamTrainingArguments),
            prog="hf-spam train",
            usage="hf-spam train [options]  |  hf-spam train OPTIONS_FILE.yaml  (--help-all: every option)",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
            add_help=False,
        )
        self.add_argument("-h", "--help", action=_Help, help="show hf_spam's options and the Trainer options a run uses")
        self.add_argument("--help-all", action=_Help, help="show every option, all of Trainer's TrainingArguments included")
        # read by main() before the run is parsed (it sets up logging); declared here for --help and the typo check
        self.add_argument(
            *VERBOSE,
            action="store_true",
            default=argparse.SUPPRESS,
            help="print everything: transformers' INFO lines, every Trainer log and the data preparation's bars",
        )
        own = {*vars(ModelArguments)["__annotations__"], *vars(DataArguments)["__annotations__"]}
        own |= {*vars(SpamTrainingArguments)["__annotations__"], *SHOWN_TRAINER_OPTIONS}
        self.trainer_only = [a for a in self._actions if a.dest not in (*own, "verbose") and a.dest != argparse.SUPPRESS]

    def print_help(self, file=None, every_option: bool = False) -> None:
        hidden = [] if every_option else self.trainer_only
        shown = [action.help for action in hidden]
        for action in hidden:
            action.help = argparse.SUPPRESS
        try:
            super().print_help(file)
        finally:
            for action, text in zip(hidden, shown, strict=True):
                action.help = text


def parser() -> TrainParser:
    return TrainParser()


def parse_command_line(parser: HfArgumentParser, argv: list[str]):
    """The three dataclasses, from the options or from one JSON/YAML file of them; values HfArgumentParser cannot
    place (``--train_file a.csv b.csv``) are an option error."""
    source = ""
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        source = f"{argv[0]}: "
        parser.prog = f"{parser.prog} {argv[0]}"  # argparse's errors name the file
        argv = options_from_file(Path(argv[0]), parser)
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        if "not used by the HfArgumentParser" not in str(error):
            raise
        unused = ast.literal_eval(str(error).split(":", 1)[1].strip())
        raise OptionError(source + unknown_options(unused, parser._option_string_actions)) from error


def options_from_file(path: Path, parser: HfArgumentParser) -> list[str]:
    """A JSON or YAML file of ``option: value`` as the command line it stands for, so that it is checked as the command
    line is (unknown options with the nearest name, types, choices): a list is the option's values, a string given to
    an option of several values is split as a shell splits it (``label_names: ham spam``), ``null`` leaves the default."""
    try:
        text = path.read_text()
        options = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except OSError as error:
        raise OptionError(f"{path}: cannot be read ({error.strerror}); give the options file's path.") from error
    except (ValueError, yaml.YAMLError) as error:
        raise OptionError(f"{path} is not valid {path.suffix[1:].upper()}: {' '.join(str(error).split())}") from error
    if not isinstance(options, dict):
        raise OptionError(f"{path} holds a {type(options).__name__}, not options: write one option per line, as learning_rate: 5.0e-5.")
    several = {action.dest for action in parser._actions if action.nargs in ("+", "*")}
    argv = []
    for key, value in options.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else shlex.split(value) if key in several and isinstance(value, str) else [value]
        argv += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return argv


def train(argv: list[str]) -> None:
    model_args, data_args, training_args = parse_command_line(parser(), argv)
    if training_args.reuse_freed_memory:
        reuse_freed_memory()  # process-wide: glibc keeps freed memory for the next batch (see hf_spam.training.allocator)
    run(model_args, data_args, training_args)


def main(argv: list[str]) -> None:
    verbose = any(arg in VERBOSE for arg in argv)
    argv = [arg for arg in argv if arg not in VERBOSE]
    # the launcher's rank (torchrun, accelerate launch), known before the arguments: only the first process logs
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    quiet(verbose)
    report_errors(lambda: train(argv))


def quiet(verbose: bool) -> None:
    """hf_spam says what the run does, and Trainer's progress bar shows one line per evaluation (``TrainingProgress``).
    transformers' INFO lines (each evaluation's size, each file a save writes), its bars for loading and writing weights,
    every Trainer log and the data preparation's bars (a fraction of a second each) were most of a run's output: they
    come back with ``-v``. Downloads keep their bars either way."""
    transformers.utils.logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
    (transformers.utils.logging.enable_progress_bar if verbose else transformers.utils.logging.disable_progress_bar)()
    (datasets.enable_progress_bars if verbose else datasets.disable_progress_bars)()
    huggingface_hub.utils.enable_progress_bars()
    logging.getLogger("hf_spam").setLevel(logging.DEBUG if verbose else logging.NOTSET)
