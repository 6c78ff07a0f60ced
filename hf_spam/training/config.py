"""``SpamTrainingArguments``: the configuration of :class:`~hf_spam.training.trainer.SpamTrainer`, as TRL's
``*_config.py`` beside its ``*_trainer.py``.

It is ``TrainingArguments`` with chapter 6's recipe as defaults, plus what a practitioner expects from a
finetuning script (keep the best epoch, bounded checkpoints). It checks what it is given and raises on
options that contradict each other; the one adjustment it makes (``use_cpu`` where there is no
accelerator) is needed for correctness and is logged. docs/training.md lists the flags that reproduce the
book exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..cache.build import PrefixCacheOptions
from ..cache.management import parse_size
from ..errors import OptionError
from ..models.gpt.configuration_gpt import REGRESSION, SINGLE_LABEL

logger = logging.getLogger(__name__)
# the names Trainer gives the two evaluation sets SpamTrainer evaluates every epoch (eval_<name>_<metric>)
EVALUATED_SPLITS = ("validation", "train")


@dataclass
class SpamTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with chapter 6's defaults: AdamW lr 5e-5, weight decay 0.1 on every
    parameter, constant rate, no clipping, 5 epochs, batch 8, seed 123, evaluation every epoch; and
    the epoch with the best validation accuracy is the one saved (``--load_best_model_at_end false
    --save_strategy no`` keeps the last epoch, as the book)."""

    _argument_group_name = "training (Trainer's TrainingArguments, with chapter 6's defaults)"

    label_names: list[str] | None = field(
        default=None,
        init=False,
        metadata={
            "help": (
                "Not an option here: the input key holding the labels is always 'labels' (--label_names names classes, see DataArguments)."
            )
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
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into a non-empty --output_dir (as run_classification.py): its model files are replaced; checkpoints "
            "another run wrote there are kept, never rotated away (default: such a folder is refused)."
        },
    )
    keep_checkpoints: bool = field(
        default=False, metadata={"help": "Keep the checkpoint-* folders after a successful run (default: removed, the final model stays)."}
    )
    train_drop_last: bool = field(
        default=True,
        metadata={
            "help": "Drop the last incomplete training batch (the book's drop_last=True on train_loader); evaluation never "
            "drops (transformers' --dataloader_drop_last would drop evaluation rows too, so it is refused)."
        },
    )
    train_sampling_strategy: str = field(
        default="random",
        metadata={
            "help": "random: the book's shuffling. group_by_length pads less but, on SMS, makes near single-class batches "
            "(spam is longer than ham) and measured 5.5 points lower test accuracy."
        },
    )
    prefix_cache: bool = field(
        default=True,
        metadata={"help": "Run the frozen embeddings/blocks once and train the top on their cached output (exact; see hf_spam.cache)."},
    )
    prefix_cache_dir: str | None = field(
        default=None, metadata={"help": "Where the prefix cache lives (default: hf_spam_prefix_cache/ under the datasets cache)."}
    )
    prefix_cache_max_size: str | None = field(
        default=None,
        metadata={
            "help": "Bound the prefix cache folder (e.g. 20GB): before building a new key, the least recently used keys "
            "that no running process holds are evicted until it fits; if it cannot fit, an error before anything is "
            "computed (default: no bound; see hf-spam cache)."
        },
    )
    verify_prefix_cache: bool = field(
        default=True,
        metadata={
            "help": "Check the prefix cache against its checksums: a reused cache is read whole before training, and every "
            "example's rows again as they are read. false only to measure what the checks cost: damage then goes unnoticed."
        },
    )
    prefix_cache_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Storage dtype of the cache: bfloat16 halves its size (default: bfloat16 under --bf16, else the model's dtype, exact).",
            "choices": ["float32", "bfloat16"],
        },
    )
    initial_eval_batches: int = field(
        default=10, metadata={"help": "Batches per split for the accuracy before training (book: 10; 0 skips)."}
    )
    train_eval_batches: int | None = field(
        default=None,
        metadata={"help": "Training batches whose accuracy is measured every evaluation (default: the whole training split; book: 5)."},
    )
    threshold: float = field(
        default=0.5, metadata={"help": "Multi-label: a class is predicted when its probability (sigmoid) is above this."}
    )
    reuse_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "Process-wide, like --tf32: glibc keeps freed memory for the next allocation instead of returning it to the "
            "system (resident memory stays at its peak; the prefix cache builds faster on CPU, see BENCHMARKS.md). "
            "hf-spam train applies it in main(); no effect off glibc."
        },
    )

    def __post_init__(self) -> None:
        self._check_best_model()
        self._check_drop_last()
        if not 0.0 <= self.threshold < 1.0:
            raise OptionError(f"--threshold {self.threshold}: give a probability in [0, 1) above which a class is predicted.")
        # accelerate treats a multi-process CPU launch (torchrun, accelerate launch) as distributed only
        # with use_cpu=True; without it every process silently trains alone on all the data as rank 0.
        if not self.use_cpu and not _has_accelerator():
            _say_cpu_once()
            self.use_cpu = True
        super().__post_init__()

    def prefix_cache_options(self, provenance: dict[str, str] | None = None) -> PrefixCacheOptions | None:
        """The ``--prefix_cache_*`` options as ``hf_spam.cache.prepare`` takes them (``None`` under ``--prefix_cache
        false``): built in batches of 4 evaluation batches, under the autocast Trainer trains with (``--bf16``/``--fp16``)."""
        if not self.prefix_cache:
            return None
        return PrefixCacheOptions(
            cache_dir=self.prefix_cache_dir,
            dtype=getattr(torch, self.prefix_cache_dtype) if self.prefix_cache_dtype else None,
            autocast=torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else None,
            batch_size=self.per_device_eval_batch_size * 4,
            verify=self.verify_prefix_cache,
            provenance=provenance or {},
            max_size=parse_size(self.prefix_cache_max_size, "--prefix_cache_max_size") if self.prefix_cache_max_size else None,
            progress=not self.disable_tqdm,
        )

    def _check_drop_last(self) -> None:
        """Every evaluation scores every row: Trainer applies ``dataloader_drop_last`` to its evaluation loaders too (the
        validation split would lose up to a batch of rows, unsaid), and ``batch_rebalance`` draws its own batches."""
        if self.dataloader_drop_last:
            raise OptionError(
                "--dataloader_drop_last would drop evaluation rows too (Trainer applies it to every loader); hf_spam evaluates "
                "every row. The book's drop of the last incomplete training batch is --train_drop_last (true by default)."
            )
        if self.train_drop_last and self.train_sampling_strategy == "batch_rebalance":
            raise OptionError(
                "--train_sampling_strategy batch_rebalance makes its own batches and cannot drop the last incomplete one: "
                "add --train_drop_last false."
            )

    def _check_best_model(self) -> None:
        """What "best" means must be one metric of one evaluated split, and keeping the best epoch needs a checkpoint
        of every evaluated epoch: anything else is an error naming the options, not a silent change of plan."""
        metric = self.metric_for_best_model
        if metric and not metric.removeprefix("eval_").startswith(tuple(f"{split}_" for split in EVALUATED_SPLITS)):
            raise OptionError(
                f"--metric_for_best_model {metric}: name the split it is measured on, e.g. validation_{metric.removeprefix('eval_')} "
                "(SpamTrainer evaluates the validation and the training split)."
            )
        save, evaluate = (getattr(strategy, "value", strategy) for strategy in (self.save_strategy, self.eval_strategy))  # str or enum
        if self.load_best_model_at_end and save not in (evaluate, "best"):
            raise OptionError(
                f"--load_best_model_at_end (true by default here) keeps the best evaluated epoch, so it needs --save_strategy equal to "
                f"--eval_strategy (got {save} and {evaluate}). To keep the last model, as the book does, "
                "add --load_best_model_at_end false."
            )


@functools.cache
def _say_cpu_once() -> None:
    logger.info("No accelerator: training on the CPU (use_cpu=True), so that a multi-process CPU launch is one distributed run.")


def _has_accelerator() -> bool:
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def choose_best_metric(args: SpamTrainingArguments, problem_type: str) -> SpamTrainingArguments:
    """The arguments with "best" chosen for the problem type: for regression and multi-label the default (validation
    accuracy) has no meaning for numbers and counts every class decision for sets, so the lowest validation MSE, or the
    highest validation micro-F1, is chosen instead, with a log line. A metric the problem type does not report is an
    error. ``args`` itself is left as it was given."""
    if args.metric_for_best_model is None or problem_type == SINGLE_LABEL:
        return args
    metric, greater = ("validation_mse", False) if problem_type == REGRESSION else ("validation_f1_micro", True)
    if args.metric_for_best_model == "validation_accuracy":
        logger.info("Best model: %s (%s is the default of single-label classification).", metric, args.metric_for_best_model)
        return dataclasses.replace(args, metric_for_best_model=metric, greater_is_better=greater)
    available = (
        ("loss", "mse", "mae", "pearson", "spearman")
        if problem_type == REGRESSION
        else ("loss", "f1_micro", "f1_macro", "exact_match", "accuracy", "precision_micro", "recall_micro")
    )
    name = args.metric_for_best_model.removeprefix("eval_").split("_", 1)[1]
    if name not in available:
        raise OptionError(f"--metric_for_best_model {args.metric_for_best_model}: {problem_type} reports {', '.join(available)}.")
    # Trainer's guess counts only names ending in "loss" as errors
    return dataclasses.replace(args, greater_is_better=name not in ("loss", "mse", "mae"))
