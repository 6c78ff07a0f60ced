"""The command line of ``scripts/train.py`` as three dataclasses for ``HfArgumentParser``.

``SpamTrainingArguments`` is ``TrainingArguments`` with chapter 6's recipe as defaults, plus what a
practitioner expects from a finetuning script (keep the best epoch, bounded checkpoints). docs/training.md
lists the flags that reproduce the book exactly.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

logger = logging.getLogger(__name__)

TRAINABLE_LAYERS = ("last_layer", "last_block", "last_two_blocks", "all", "lora")


@dataclass
class ModelArguments:
    """Which model to finetune and which of its parameters train."""

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
            "choices": ["last_non_pad", "last", "first", "mean", "mean_all"],
        },
    )
    random_init: str = field(
        default="gpt2",
        metadata={
            "help": "With --weights random: gpt2 (GPT-2's N(0, 0.02) init) or book (PyTorch's default module init after "
            "torch.manual_seed(123), exactly the book's GPTModel, as bonus row 10 measured).",
            "choices": ["gpt2", "book"],
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

    data_file: str | None = field(default=None, metadata={"help": "Local SMSSpamCollection or the UCI zip (default: download it once)."})
    split: str = field(
        default="chapter",
        metadata={
            "help": "SMS rows per split: chapter (listings 6.2/6.3) or bonus (the bonus experiments script's, shuffled once more).",
            "choices": ["chapter", "bonus"],
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
    problem_type: str | None = field(
        default=None,
        metadata={
            "help": "single_label_classification (classes; cross-entropy), regression (numbers; MSE) or multi_label_classification "
            "(sets of classes; BCE). Default: multi-label for several label columns or a column of lists, else single-label.",
            "choices": ["single_label_classification", "regression", "multi_label_classification"],
        },
    )
    threshold: float = field(
        default=0.5, metadata={"help": "Multi-label: a class is predicted when its probability (sigmoid) is above this."}
    )
    invalid_rows: str = field(
        default="error",
        metadata={
            "help": "Rows with an empty text or a missing label: error (default) or drop (and report).",
            "choices": ["error", "drop"],
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
            "choices": ["minimal", "none"],
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
            "choices": ["longest_train", "max_length", "dynamic", "none"],
        },
    )
    max_length: int | None = field(default=None, metadata={"help": "Pad length for --padding max_length (default: context length)."})
    context_length: int | None = field(
        default=None, metadata={"help": "Truncate texts to this many tokens (default: the model's context length)."}
    )
    initial_eval_batches: int = field(
        default=10, metadata={"help": "Batches per split for the accuracy before training (book: 10; 0 skips)."}
    )
    train_eval_batches: int | None = field(
        default=None,
        metadata={"help": "Training batches whose accuracy is measured every evaluation (default: the whole training split; book: 5)."},
    )


@dataclass
class SpamTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with chapter 6's defaults: AdamW lr 5e-5, weight decay 0.1 on every
    parameter, constant rate, no clipping, 5 epochs, batch 8, seed 123, evaluation every epoch; and
    the epoch with the best validation accuracy is the one saved (``--load_best_model_at_end false
    --save_strategy no`` keeps the last epoch, as the book)."""

    label_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "Class names: of integer labels 0, 1, ... (e.g. --label_names ham spam), or the order of string labels. "
            "(Trainer's option of this name, the input keys holding labels, is always 'labels' for hf_spam models.)"
        },
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate (book: 5e-5)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (book: 0.1)."})
    weight_decay_scope: str = field(
        default="book",
        metadata={
            "help": "book: decay every parameter, as AdamW(model.parameters()); transformers: Trainer's name rules "
            "(with the book's names they spare biases and final_norm but still decay norm1/norm2).",
            "choices": ["book", "transformers"],
        },
    )
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs (book: 5)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size (book: 8)."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch size."})
    seed: int = field(default=123, metadata={"help": "Seed for init and data order (book: 123)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Learning-rate schedule (book: constant)."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping (book: none = 0)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate (book: every epoch for accuracy)."})
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss every N steps (book: eval_freq=50)."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint (book: no; the final model is always saved)."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept besides the best one."})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Save the epoch with the best --metric_for_best_model, not the last (book: false)."}
    )
    metric_for_best_model: str | None = field(
        default="validation_accuracy",
        metadata={"help": "What 'best' means: validation_accuracy (default), validation_f1, validation_loss..."},
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement (transformers' EarlyStoppingCallback)."}
    )
    keep_checkpoints: bool = field(
        default=False, metadata={"help": "Keep the checkpoint-* folders after a successful run (default: removed, the final model stays)."}
    )
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "Drop the last incomplete training batch (book); evaluation never drops."}
    )
    train_sampling_strategy: str = field(
        default="random",
        metadata={
            "help": "random: the book's shuffling. group_by_length pads less but, on SMS, makes near single-class batches "
            "(spam is longer than ham) and measured 5.5 points lower test accuracy."
        },
    )
    cache_frozen_trunk: bool = field(
        default=True,
        metadata={"help": "Run the frozen embeddings/blocks once and train the top on their cached output (exact; see cached_trunk)."},
    )
    trunk_cache_dir: str | None = field(
        default=None, metadata={"help": "Where the frozen-prefix cache lives (default: hf_spam_trunk/ under the datasets cache)."}
    )
    trunk_cache_max_size: str | None = field(
        default=None,
        metadata={
            "help": "Bound the frozen-prefix cache folder (e.g. 20GB): before building a new key, the least recently used keys "
            "that no running process holds are evicted until it fits; if it cannot fit, an error before anything is "
            "computed (default: no bound; see scripts/cache.py)."
        },
    )
    verify_trunk_cache: bool = field(
        default=True,
        metadata={
            "help": "Check the frozen-prefix cache against its checksums: a reused cache is read whole before training, and every "
            "example's rows again as they are read. false only to measure what the checks cost: damage then goes unnoticed."
        },
    )
    cache_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Storage dtype of the cache: bfloat16 halves its size (default: bfloat16 under --bf16, else the model's dtype, exact).",
            "choices": ["float32", "bfloat16"],
        },
    )
    reuse_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "Process-wide, like --tf32: glibc keeps freed memory for the next allocation instead of returning it to the "
            "system (resident memory stays at its peak; the frozen-prefix cache builds faster on CPU, see BENCHMARKS.md). No effect off glibc."
        },
    )

    def __post_init__(self) -> None:
        if self.reuse_freed_memory:
            reuse_freed_memory()
        # --label_names names the classes here; Trainer reads label_names as input keys, which are "labels"
        self.class_names, self.label_names = self.label_names, None
        # accelerate treats a multi-process CPU launch (torchrun, accelerate launch) as distributed only
        # with use_cpu=True; without it every process silently trains alone on all the data as rank 0.
        if not self.use_cpu and not _has_accelerator():
            self.use_cpu = True
        # Trainer prefixes "eval_"; the evaluation set is named "validation" (beside "train"), so
        # "accuracy" means the validation split's accuracy.
        if self.metric_for_best_model and not self.metric_for_best_model.removeprefix("eval_").startswith(("validation_", "train_")):
            self.metric_for_best_model = "validation_" + self.metric_for_best_model.removeprefix("eval_")
        if self.load_best_model_at_end and str(self.save_strategy) != str(self.eval_strategy):
            # nothing to compare, nothing checkpointed, or checkpoints at other times than evaluations:
            # the last step's model is the result (the book's behaviour)
            if "no" not in (str(self.save_strategy), str(self.eval_strategy)):
                logger.warning(
                    "Keeping the last model, not the best: --load_best_model_at_end needs --save_strategy equal to --eval_strategy "
                    "(got %s, %s).",
                    self.save_strategy,
                    self.eval_strategy,
                )
            self.load_best_model_at_end = False
        if not self.load_best_model_at_end and self.early_stopping_patience is None:
            self.metric_for_best_model = None
        super().__post_init__()


# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> bool:
    """Have glibc keep freed memory in the process for later allocations; ``False`` where the C library is not glibc.

    Why: a transformer block allocates and frees activations of megabytes per operation (a 2,048-token
    feed-forward's are tens of megabytes). By default glibc maps allocations above a (dynamic) threshold afresh
    and returns the top of its heap once more than twice that is free, so every batch faults the same memory
    in again, page by page, a measurable part of the prefix cache's time (BENCHMARKS.md). Allocations up to 32 MiB (glibc's largest dynamic threshold) then come from the heap, and the heap
    is not trimmed: the resident memory stays at its peak, as a GPU's caching allocator keeps its memory.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def _has_accelerator() -> bool:
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()
