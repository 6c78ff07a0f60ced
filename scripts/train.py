"""Finetune the book's GPT as a text classifier (chapter 6) with Trainer.

    python scripts/train.py --output_dir runs/spam                       # the book's recipe
    python scripts/train.py --data_file path/to/SMSSpamCollection --weights random \\
        --config_overrides "n_layers=2,emb_dim=128,n_heads=2" --trainable_layers all --learning_rate 5e-4 --output_dir runs/tiny
    accelerate launch scripts/train.py ...                               # several GPUs, unchanged
"""

import logging
import os
import sys

import transformers
from transformers import HfArgumentParser

from hf_spam.allocator import reuse_freed_memory
from hf_spam.arguments import DataArguments, ModelArguments
from hf_spam.errors import HfSpamError, OptionError
from hf_spam.spam_config import SpamTrainingArguments
from hf_spam.training import run


def parse_command_line(parser: HfArgumentParser):
    """The three dataclasses; values HfArgumentParser cannot place (``--train_file a.csv b.csv``) are an option error."""
    try:
        return parser.parse_args_into_dataclasses()
    except ValueError as error:
        if "not used by the HfArgumentParser" not in str(error):
            raise
        unused = str(error).split(":", 1)[1].strip()
        raise OptionError(
            f"Values no option takes: {unused}. Each option takes one value unless its --help says otherwise "
            "(--train_file, --validation_file and --test_file take one file each; put several in one file or a folder, "
            "see --dataset_name)."
        ) from error


def main() -> None:
    # the launcher's rank (torchrun, accelerate launch), known before the arguments: only the first process logs
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity(level)
    parser = HfArgumentParser((ModelArguments, DataArguments, SpamTrainingArguments))
    try:  # a bad option or file is reported by its message alone (it names the option or file and what to do)
        if len(sys.argv) == 2 and sys.argv[1].endswith((".json", ".yaml", ".yml")):
            parse = parser.parse_json_file if sys.argv[1].endswith(".json") else parser.parse_yaml_file
            model_args, data_args, training_args = parse(sys.argv[1])
        else:
            model_args, data_args, training_args = parse_command_line(parser)
        if training_args.reuse_freed_memory:
            reuse_freed_memory()  # process-wide: glibc keeps freed memory for the next batch (see hf_spam.allocator)
        run(model_args, data_args, training_args)
    except HfSpamError as error:
        logging.getLogger("hf_spam").error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
