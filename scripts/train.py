"""Finetune the book's GPT as a text classifier (chapter 6) with Trainer.

    python scripts/train.py --output_dir runs/spam                       # the book's recipe
    python scripts/train.py --data_file path/to/SMSSpamCollection --weights random \\
        --config_overrides "n_layers=2,emb_dim=128,n_heads=2" --trainable_layers all --learning_rate 5e-4 --output_dir runs/tiny
    accelerate launch scripts/train.py ...                               # several GPUs, unchanged
"""

import logging
import sys

import transformers
from transformers import HfArgumentParser

from hf_spam.arguments import DataArguments, ModelArguments, SpamTrainingArguments
from hf_spam.errors import HfSpamError
from hf_spam.training import run


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, SpamTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith((".json", ".yaml", ".yml")):
        model_args, data_args, training_args = (
            parser.parse_yaml_file(sys.argv[1]) if not sys.argv[1].endswith(".json") else parser.parse_json_file(sys.argv[1])
        )
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    level = logging.INFO if training_args.process_index == 0 else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity(level)
    try:
        run(model_args, data_args, training_args)
    except HfSpamError as error:  # the message names the file or option and what to do: no traceback
        logging.getLogger("hf_spam").error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
