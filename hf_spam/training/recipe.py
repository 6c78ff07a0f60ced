"""Chapter 6's finetuning run, top to bottom: data, model, freezing, training with :class:`SpamTrainer`,
evaluation on every split, then the saved model, metrics, plots and model card (and the Hub push).

``hf-spam train`` parses :class:`~hf_spam.training.arguments.ModelArguments`,
:class:`~hf_spam.training.arguments.DataArguments` and :class:`~hf_spam.training.config.SpamTrainingArguments`
with ``HfArgumentParser`` and calls :func:`run`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

from .. import cache
from ..data import ClassificationData, TokenizedData, describe, load_sms_spam, load_text_classification, tokenize
from ..data.reading import parse_encodings
from ..data.tokenization import cross_split_duplicates
from ..errors import DataError, OptionError, disk_errors
from ..models.gpt.configuration_gpt import BOOK_PADDED_POOLINGS, SINGLE_LABEL, GPTConfig
from ..models.gpt.modeling_gpt import GPTForSequenceClassification
from ..tokenizer import gpt2_tokenizer
from .arguments import DataArguments, ModelArguments
from .checkpoints import claim_output_dir, data_fingerprint, load_checkpoint_weights, resolve_checkpoint, run_identity
from .config import SpamTrainingArguments, choose_best_metric
from .model_card import RunRecord
from .model_setup import build_model, configure_trainable, count_parameters
from .trainer import SpamTrainer

logger = logging.getLogger(__name__)

# what a run stopped by its disk leaves: checkpoints are complete or ignored when resuming (their manifests)
KEPT_ON_DISK_ERROR = "its complete checkpoints are kept, and --resume_from_checkpoint last continues from the last one"
SMS_SOURCE = "UCI SMS Spam Collection (balanced 747/747, split 70/10/20 with seed 123, as in chapter 6)"
# the training options the model card's recipe lists (beside every model and data option)
RECIPE_TRAINING_OPTIONS = (
    "learning_rate",
    "weight_decay",
    "weight_decay_scope",
    "num_train_epochs",
    "per_device_train_batch_size",
    "seed",
    "load_best_model_at_end",
    "metric_for_best_model",
    "early_stopping_patience",
    "initial_eval_batches",
    "train_eval_batches",
    "threshold",
)


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: SpamTrainingArguments,
    *,
    callbacks: list[TrainerCallback] | None = None,
    trainer_class: type[SpamTrainer] = SpamTrainer,
) -> dict:
    """Prepare the data, finetune, evaluate on all splits, save model + tokenizer + code + card + plots; returns
    ``all_results.json``'s figures. ``callbacks`` are added to Trainer's; ``trainer_class`` lets a caller observe
    training (a subclass)."""
    pooling = pooling_for(model_args.pooling, data_args.padding)
    output_dir = Path(training_args.output_dir)
    # a full or read-only disk under --output_dir (a checkpoint, the model, the report): one line, exit 74
    with disk_errors(output_dir, "--output_dir", KEPT_ON_DISK_ERROR):
        claim = claim_output_dir(
            output_dir,
            overwrite=training_args.overwrite_output_dir,
            resume=training_args.resume_from_checkpoint,
            main_process=training_args.process_index == 0,
        )
        with claim:
            return _run(model_args, data_args, training_args, pooling, callbacks, trainer_class)


def _run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: SpamTrainingArguments,
    pooling: str,
    callbacks: list[TrainerCallback] | None,
    trainer_class: type[SpamTrainer],
) -> dict:
    output_dir = Path(training_args.output_dir)
    data = load_data(data_args, training_args.seed)
    training_args = choose_best_metric(training_args, data.problem_type)
    model = build_model(
        model_args.model_name_or_path,
        dict(enumerate(data.label_names)),
        seed=training_args.seed,
        weights=model_args.weights,
        problem_type=data.problem_type,
        pooling=pooling,
        loss_ignore_index=model_args.loss_ignore_index,
        config_overrides=model_args.config_overrides,
        random_init=model_args.random_init,
    )
    context_length = min(data_args.context_length or model.config.context_length, model.config.context_length)
    tokenized = tokenize(data.splits, data_args.padding, max_length=data_args.max_length, context_length=context_length)
    model.config.update(inference_options(model.config, tokenized))
    model.config.validate_book_fields()
    if training_args.process_index == 0:
        logger.info(
            "Data:\n%s\n%s", data.summary(), describe(data.splits, tokenized, training_args.per_device_train_batch_size, data.label_names)
        )
        warn_cross_split_duplicates(data.splits)
    check_one_batch(len(data.splits["train"]), training_args, data.origin.get("train", "the training data"))

    model = configure_trainable(model, model_args.trainable_layers, lora_rank=model_args.lora_rank, lora_alpha=model_args.lora_alpha)
    trainable, total = count_parameters(model)
    logger.info("Trainable parameters: %s of %s (%s)", f"{trainable:,}", f"{total:,}", model_args.trainable_layers)
    run_record = describe_run(model_args, data_args, training_args, data)
    # before anything is computed from the weights: the prefix cache must come from the checkpoint's
    identity = run_identity(model, training_args, run_record.data_fingerprint)
    resume = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir, not training_args.save_only_model, identity)
    if resume and isinstance(model, GPTForSequenceClassification):
        load_checkpoint_weights(model, resume)
    splits, collator = prepare_prefix_cache(model, tokenized, training_args, run_record)

    trainer = trainer_class(
        model,
        training_args,
        collator,
        splits["train"],
        splits["validation"],
        test_dataset=splits["test"],
        processing_class=gpt2_tokenizer(model.config.token_limit),
        run=run_record,
        identity=identity,
        callbacks=callbacks,
    )
    trainer.evaluate_initial()
    trainer.evaluate_final(trainer.train(resume_from_checkpoint=resume))
    trainer.save_run()
    return trainer.run_metrics


def prepare_prefix_cache(
    model: torch.nn.Module, tokenized: TokenizedData, args: SpamTrainingArguments, run_record: RunRecord
) -> tuple[dict, Callable]:
    """Each split as its cached prefix (``hf_spam.cache.prepare``: the frozen embeddings and blocks run once, built
    here when no intact cache exists) and their collator; the token ids and their collator when nothing is frozen or
    ``--prefix_cache false`` (the whole model then runs every step)."""
    options = args.prefix_cache_options(run_record.provenance)
    prepared = cache.prepare(model, tokenized.splits, options) if options else None
    if prepared is None:
        logger.debug("Training the whole model on token ids (nothing frozen to cache, or --prefix_cache false).")
        return tokenized.splits, tokenized.collator
    return prepared


def pooling_for(pooling: str, padding: str) -> str:
    """The pooling a run trains, evaluates and saves. ``last`` and ``mean_all`` read pad positions (the book's position
    -1 is a pad after its fixed padding): under ``--padding dynamic`` how many pads a text gets depends on its batch,
    so the run's figures and the saved model's answers would move with ``--batch_size``; that is refused. Under
    ``--padding none`` a text has no pads of its own, so they read exactly what ``last_non_pad`` and ``mean`` read,
    which are what stays true when evaluation and ``hf-spam classify`` batch texts of several lengths."""
    if pooling not in BOOK_PADDED_POOLINGS:
        return pooling
    if padding == "dynamic":
        raise OptionError(
            f"--pooling {pooling} reads pad positions, and under --padding dynamic a text's pads depend on its batch, so the "
            "figures and the saved model's answers would change with the batch size. Use --padding longest_train (the book's) "
            "or max_length with it, or --pooling last_non_pad / mean, which read real tokens only."
        )
    if padding == "none":
        unpadded = {"last": "last_non_pad", "mean_all": "mean"}[pooling]
        logger.info("--pooling %s on unpadded texts reads what --pooling %s reads; the model is saved with the latter.", pooling, unpadded)
        return unpadded
    return pooling


def inference_options(config: GPTConfig, tokenized: TokenizedData) -> dict:
    """How the run's texts were read, for the saved config: the book's pad length (position -1 is a pad) and the
    length texts were cut to. ``hf-spam classify``, ``pipeline`` and the demo read them there (``GPTConfig.token_limit``),
    and the model itself cuts and pads its input so (a multi-label model's threshold is recorded by ``SpamTrainer``)."""
    options = {}
    if config.pooling in BOOK_PADDED_POOLINGS and tokenized.max_length is not None:
        options["padded_length"] = tokenized.max_length
    if tokenized.truncation_length < config.context_length:
        options["truncation_length"] = tokenized.truncation_length
    return options


def load_data(args: DataArguments, seed: int) -> ClassificationData:
    """The user's data with their splits, or chapter 6's SMS data (downloaded once, or ``--data_file``)."""
    if args.dataset_name or args.train_file or args.validation_file or args.test_file:
        return load_text_classification(
            args.dataset_name,
            train_file=args.train_file,
            validation_file=args.validation_file,
            test_file=args.test_file,
            text_column=args.text_column,
            label_column=args.label_column,
            problem_type=args.problem_type,
            config_name=args.dataset_config_name,
            splits=args.splits,
            label_names=args.label_names,
            invalid_rows=args.invalid_rows,
            encoding=parse_encodings(args.encoding),
            quoting=args.quoting,
            allow_unseen_labels=args.allow_unseen_labels,
            balance=args.balance,
            seed=seed,
        )
    if args.problem_type not in (None, SINGLE_LABEL) or args.label_column != ["label"] or args.label_names is not None:
        raise DataError(
            "--problem_type, --label_column and --label_names describe your own data (--train_file, a folder or --dataset_name); "
            "the SMS data is ham/spam."
        )
    splits = load_sms_spam(args.data_file, split=args.split)
    source = SMS_SOURCE if args.split == "chapter" else SMS_SOURCE.replace("as in chapter 6", "as in chapter 6's bonus experiments")
    return ClassificationData(splits, source, {name: f"the book's balanced 70/10/20 split ({args.split})" for name in splits})


def describe_run(
    model_args: ModelArguments, data_args: DataArguments, training_args: SpamTrainingArguments, data: ClassificationData
) -> RunRecord:
    """The run as its model card tells it: the weights, the data, the classes and every option given."""
    on_hub = data_args.dataset_name and not Path(data_args.dataset_name).exists()
    recipe = asdict(model_args) | {k: v for k, v in asdict(data_args).items() if v is not None}
    recipe |= {k: getattr(training_args, k) for k in RECIPE_TRAINING_OPTIONS if getattr(training_args, k) is not None}
    return RunRecord(
        model=model_args.model_name_or_path,
        weights=model_args.weights,
        dataset_name=data.source,
        dataset_id=data.source if on_hub else None,
        label_names=data.label_names,
        problem_type=data.problem_type,
        example_texts=_examples(data.splits["validation"]),
        recipe=recipe,
        config_overrides=model_args.config_overrides,
        dropped_rows={name: len(rows) for name, rows in data.dropped.items()},
        data_fingerprint=data_fingerprint(data.splits),
    )


def check_one_batch(rows: int, args: SpamTrainingArguments, where: str) -> None:
    """An error before any training when the training split cannot fill one batch (nothing would train)."""
    needed = args.per_device_train_batch_size * args.world_size
    if args.train_drop_last and rows < needed:
        processes = f" x {args.world_size} processes" if args.world_size > 1 else ""
        raise DataError(
            f"The training split ({where}) has {rows} rows; one batch needs {needed} (--per_device_train_batch_size "
            f"{args.per_device_train_batch_size}{processes}), and --train_drop_last (the book's) drops an incomplete "
            f"batch, so nothing would train. Give at least {needed} training rows, a smaller --per_device_train_batch_size, "
            "or --train_drop_last false."
        )


def warn_cross_split_duplicates(splits) -> None:
    """Texts of validation/test that also occur in training make those accuracies partly a memory test: say how many."""
    leaked = {name: count for name, count in cross_split_duplicates(splits).items() if count}
    if leaked:
        logger.warning(
            "Texts also in the training split: %s. They are kept, as the book keeps them, so those splits' accuracy partly "
            "measures texts seen in training; remove them from your files for an estimate on unseen texts only.",
            ", ".join(f"{name} {count}" for name, count in leaked.items()),
        )


def _examples(split: Dataset, limit: int = 300, most: int = 4) -> list[str]:
    """The first validation text of each class, or set of classes, or target value (cut to ``limit``
    characters, at most ``most``): the card's usage example and widget texts."""
    seen, texts = set(), []
    for text, label in zip(split["text"], split["label"], strict=True):
        key = tuple(label) if isinstance(label, list) else label
        if key not in seen and len(texts) < most:
            seen.add(key)
            texts.append(text[:limit])
    return texts
