"""The model and the data of ``hf-spam train``'s command line, as dataclasses for ``HfArgumentParser``
(the trainer's own options are :class:`~hf_spam.training.config.SpamTrainingArguments`).

The choices of each option are the library's own lists, so a new pooling or padding is one edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.reading import QUOTINGS
from ..data.sms import SMS_SPLITS
from ..data.tokenization import PADDINGS
from ..data.user_files import INVALID_ROWS
from ..models.gpt.configuration_gpt import POOLINGS, PROBLEM_TYPES
from .model_setup import RANDOM_INITS, TRAINABLE_LAYERS


@dataclass
class ModelArguments:
    """Which model to finetune and which of its parameters train."""

    _argument_group_name = "the model"  # HfArgumentParser puts each dataclass's options under its own heading

    model_name_or_path: str = field(
        default="gpt2-small",
        metadata={"help": "Book preset (gpt2-small|gpt2-medium|gpt2-large|gpt2-xl), GPT-2 Hub id, or a local GPT-2 / hf_spam folder."},
    )
    weights: str = field(
        default="pretrained", metadata={"help": "pretrained (OpenAI's GPT-2) or random.", "choices": ["pretrained", "random"]}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": 'Override config fields, e.g. "n_layers=2,emb_dim=128,n_heads=2" (shapes only with --weights random).'},
    )
    trainable_layers: str = field(
        default="last_block", metadata={"help": "What trains besides the new head.", "choices": list(TRAINABLE_LAYERS)}
    )
    pooling: str = field(
        default="last_non_pad",
        metadata={
            "help": "What the classifier reads: last_non_pad, last (the book: position -1), first, mean (real tokens), "
            "mean_all (every position, pads included: the bonus experiments' --average_embeddings).",
            "choices": list(POOLINGS),
        },
    )
    random_init: str = field(
        default="gpt2",
        metadata={
            "help": "With --weights random: gpt2 (GPT-2's N(0, 0.02) init) or book (PyTorch's default module init after "
            "torch.manual_seed(123), exactly the book's GPTModel, as bonus row 10 measured).",
            "choices": list(RANDOM_INITS),
        },
    )
    loss_ignore_index: int = field(
        default=-100, metadata={"help": "ignore_index of the loss (bonus row 18: 50256; no effect on class ids)."}
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank (appendix E: 16)."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (appendix E: 16)."})


@dataclass
class DataArguments:
    """The data: the SMS Spam Collection by default, or any text-classification dataset with its own splits."""

    _argument_group_name = "the data"

    data_file: str | None = field(default=None, metadata={"help": "Local SMSSpamCollection or the UCI zip (default: download it once)."})
    split: str = field(
        default="chapter",
        metadata={
            "help": "SMS rows per split: chapter (listings 6.2/6.3) or bonus (the bonus experiments script's, shuffled once more).",
            "choices": list(SMS_SPLITS),
        },
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Instead of SMS: a Hub dataset id, a folder of train/validation/test files, or one CSV/TSV/JSON(L)/Parquet file."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_file: str | None = field(
        default=None, metadata={"help": "Training data file (CSV/TSV/JSON(L)/Parquet), as run_classification.py."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data file (default: cut from the training data)."})
    test_file: str | None = field(default=None, metadata={"help": "Test data file (default: cut from the training data)."})
    splits: list[str] | None = field(
        default=None,
        metadata={"help": "Hub splits to use, e.g. 'train test' or 'train validation=dev' (default: train/validation/test by name)."},
    )
    text_column: str = field(default="text", metadata={"help": "Text column of your data."})
    label_column: list[str] = field(
        default_factory=lambda: ["label"],
        metadata={
            "help": "Label column of your data; for multi-label, one column of lists of classes or several 0/1 columns "
            "(--label_column toxic insult threat), for regression one column per target."
        },
    )
    label_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "Class names: of integer labels 0, 1, ... (e.g. --label_names ham spam), or the order of string labels. "
            "(Trainer's option of this name, the input keys holding labels, is always 'labels' for hf_spam models.)"
        },
    )
    problem_type: str | None = field(
        default=None,
        metadata={
            "help": "single_label_classification (classes; cross-entropy), regression (numbers; MSE) or multi_label_classification "
            "(sets of classes; BCE). Default: multi-label for several label columns or a column of lists, else single-label.",
            "choices": list(PROBLEM_TYPES),
        },
    )
    invalid_rows: str = field(
        default="error",
        metadata={
            "help": "Rows with an empty text or a missing label: error (default) or drop (and report).",
            "choices": list(INVALID_ROWS),
        },
    )
    encoding: list[str] = field(
        default_factory=lambda: ["utf-8"],
        metadata={
            "help": "Encoding of CSV/TSV/JSON(L) files: one for all (latin-1, cp1252, ...), or per split: train=cp1252 test=utf-8. "
            "A byte-order mark overrides it; a UTF-8 file with non-ASCII text under another encoding is an error."
        },
    )
    quoting: str = field(
        default="minimal",
        metadata={
            "help": "CSV/TSV quoting: minimal (CSV's double quotes around fields, pandas' default) or none (quotes are ordinary "
            "characters, as in most tab-separated files).",
            "choices": list(QUOTINGS),
        },
    )
    allow_unseen_labels: bool = field(
        default=False,
        metadata={"help": "Accept classes that occur in validation/test but never in training (a warning instead of an error)."},
    )
    balance: bool = field(
        default=False,
        metadata={
            "help": "Undersample the training data's classes to the smallest (SMS is always balanced before splitting, as the book)."
        },
    )
    padding: str = field(
        default="dynamic",
        metadata={
            "help": "dynamic: pad each batch; longest_train: the book's pad-to-longest (120).",
            "choices": list(PADDINGS),
        },
    )
    max_length: int | None = field(default=None, metadata={"help": "Pad length for --padding max_length (default: context length)."})
    context_length: int | None = field(
        default=None, metadata={"help": "Truncate texts to this many tokens (default: the model's context length)."}
    )
