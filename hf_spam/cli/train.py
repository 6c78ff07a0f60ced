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
import logging
import os

import transformers
from transformers import HfArgumentParser

from ..errors import OptionError
from ..training.allocator import reuse_freed_memory
from ..training.arguments import DataArguments, ModelArguments
from ..training.config import SpamTrainingArguments
from ..training.recipe import run
from .common import OneLineErrors, report_errors, unknown_options


class TrainParser(OneLineErrors, HfArgumentParser):
    """HfArgumentParser over the three dataclasses (``--output_dir`` and ``--output-dir`` alike), errors on one line."""


def parser() -> TrainParser:
    return TrainParser(
        (ModelArguments, DataArguments, SpamTrainingArguments),
        prog="hf-spam train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )


def parse_command_line(parser: HfArgumentParser, argv: list[str]):
    """The three dataclasses, from one JSON/YAML file or the options; values HfArgumentParser cannot place
    (``--train_file a.csv b.csv``) are an option error."""
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        return (parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file)(argv[0])
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        if "not used by the HfArgumentParser" not in str(error):
            raise
        unused = ast.literal_eval(str(error).split(":", 1)[1].strip())
        raise OptionError(unknown_options(unused, parser._option_string_actions)) from error


def train(argv: list[str]) -> None:
    model_args, data_args, training_args = parse_command_line(parser(), argv)
    if training_args.reuse_freed_memory:
        reuse_freed_memory()  # process-wide: glibc keeps freed memory for the next batch (see hf_spam.training.allocator)
    run(model_args, data_args, training_args)


def main(argv: list[str]) -> None:
    # the launcher's rank (torchrun, accelerate launch), known before the arguments: only the first process logs
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity(level)
    report_errors(lambda: train(argv))
