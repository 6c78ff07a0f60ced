"""Chapter 6's finetuning run with ``Trainer``, top to bottom: data, model, freezing, training,
evaluation on every split, then the saved model, metrics, plots and model card (and the Hub push).

``scripts/train.py`` parses :class:`~hf_spam.arguments.ModelArguments`,
:class:`~hf_spam.arguments.DataArguments` and :class:`~hf_spam.arguments.SpamTrainingArguments`
with ``HfArgumentParser`` and calls :func:`run`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

from .arguments import DataArguments, ModelArguments, SpamTrainingArguments
from .cache_store import format_size, parse_size
from .cached_trunk import cached_splits
from .checkpoints import ChecksumManifest, load_checkpoint_weights, remove_checkpoints, resolve_checkpoint, trainable_names
from .configuration_gpt import BOOK_PADDED_POOLINGS
from .data import ClassificationData, cross_split_duplicates, describe, load_sms_spam, load_text_classification, parse_encodings, tokenize
from .data.targets import REGRESSION, SINGLE_LABEL
from .errors import DataError
from .model_card import build_model_card
from .model_setup import build_model, configure_trainable, count_parameters
from .modeling_gpt import GPTForSequenceClassification
from .plots import plot_history
from .tokenizer import gpt2_tokenizer
from .trainer import SpamTrainer, ValidationEarlyStopping, make_compute_metrics, metric_for, metric_results

logger = logging.getLogger(__name__)

TIMING_KEYS = ("_runtime", "_per_second", "_model_preparation_time")
SMS_SOURCE = "UCI SMS Spam Collection (balanced 747/747, split 70/10/20 with seed 123, as in chapter 6)"


def load_data(args: DataArguments, seed: int, class_names: list[str] | None = None) -> ClassificationData:
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
            label_names=class_names,
            invalid_rows=args.invalid_rows,
            encoding=parse_encodings(args.encoding),
            quoting=args.quoting,
            allow_unseen_labels=args.allow_unseen_labels,
            balance=args.balance,
            seed=seed,
        )
    if args.problem_type not in (None, SINGLE_LABEL) or args.label_column != ["label"]:
        raise DataError("--problem_type and --label_column describe your own data (--train_file, a folder or --dataset_name); the SMS data is ham/spam.")
    splits = load_sms_spam(args.data_file, split=args.split)
    source = SMS_SOURCE if args.split == "chapter" else SMS_SOURCE.replace("as in chapter 6", "as in chapter 6's bonus experiments")
    return ClassificationData(splits, source, {name: f"the book's balanced 70/10/20 split ({args.split})" for name in splits})


def check_one_batch(rows: int, args: SpamTrainingArguments, where: str) -> None:
    """An error before any training when the training split cannot fill one batch (nothing would train)."""
    needed = args.per_device_train_batch_size * args.world_size
    if args.dataloader_drop_last and rows < needed:
        processes = f" x {args.world_size} processes" if args.world_size > 1 else ""
        raise DataError(
            f"The training split ({where}) has {rows} rows; one batch needs {needed} (--per_device_train_batch_size "
            f"{args.per_device_train_batch_size}{processes}), and --dataloader_drop_last (the book's) drops an incomplete "
            f"batch, so nothing would train. Give at least {needed} training rows, a smaller --per_device_train_batch_size, "
            "or --dataloader_drop_last false."
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


def cache_record(splits: dict) -> dict:
    """Which frozen-prefix cache each split used, whether this run built it, and its size (logged, and kept in all_results.json)."""
    record = {}
    for name, cache in splits.items():
        logger.info(
            "Frozen-prefix cache for %s: %s, %s (%s).", name, cache.folder, "built by this run" if cache.built else "reused", format_size(cache.bytes)
        )
        record |= {f"trunk_cache_{name}_key": cache.folder.name, f"trunk_cache_{name}_built": cache.built, f"trunk_cache_{name}_bytes": cache.bytes}
    return record


def _first_batches(dataset: Dataset, batches: int | None, batch_size: int) -> Dataset:
    return dataset if batches is None else dataset.select(range(min(len(dataset), batches * batch_size)))


def warn_if_fsdp_ignored(trainer: SpamTrainer) -> None:
    """accelerate turns FSDP on only for accelerators (GPUs and the like): asked for on CPU processes
    (``accelerate launch --use_fsdp``, or ``--fsdp``), it trains with DDP, every process holding the whole
    model, and says nothing. The run is right, but not sharded: say so."""
    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" or bool(trainer.args.fsdp)
    if asked and not trainer.is_fsdp_enabled:
        logger.warning(
            "FSDP was asked for, but accelerate shards only on accelerators (GPUs): on %s it trains with DDP, "
            "every process holding the whole model.",
            trainer.args.device.type,
        )


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: SpamTrainingArguments,
    *,
    callbacks: list[TrainerCallback] | None = None,
    trainer_class: type[SpamTrainer] = SpamTrainer,
) -> dict:
    """Prepare the data, finetune, evaluate on all splits, save model + tokenizer + code + card + plots.

    ``callbacks`` are added to Trainer's; ``trainer_class`` lets a caller observe training (a subclass).
    """
    output_dir = Path(training_args.output_dir)
    data = load_data(data_args, training_args.seed, training_args.class_names)
    label_names = data.label_names
    model = build_model(model_args, dict(enumerate(label_names)), training_args.seed, data.problem_type)
    choose_best_metric(training_args, data.problem_type)
    context_length = min(data_args.context_length or model.config.context_length, model.config.context_length)
    tokenized = tokenize(data.splits, data_args.padding, max_length=data_args.max_length, context_length=context_length)
    if model.config.pooling in BOOK_PADDED_POOLINGS and tokenized.max_length is not None:
        model.config.padded_length = tokenized.max_length  # position -1 is a pad: inference must pad the same way
    if training_args.process_index == 0:
        logger.info("Data:\n%s\n%s", data.summary(), describe(data.splits, tokenized, training_args.per_device_train_batch_size))
        warn_cross_split_duplicates(data.splits)
    check_one_batch(len(data.splits["train"]), training_args, data.origin.get("train", "the training data"))

    model = configure_trainable(model, model_args)
    trainable, total = count_parameters(model)
    logger.info("Trainable parameters: %s of %s (%s)", f"{trainable:,}", f"{total:,}", model_args.trainable_layers)
    # before anything is computed from the weights: the frozen-prefix cache must come from the checkpoint's
    resume = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir, not training_args.save_only_model, trainable_names(model))
    if resume and isinstance(model, GPTForSequenceClassification):
        load_checkpoint_weights(model, resume)
    cached = None
    if training_args.cache_frozen_trunk:
        cache_dtype = getattr(torch, training_args.cache_dtype) if training_args.cache_dtype else None
        autocast = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else None  # as Trainer's
        batch_size = training_args.per_device_eval_batch_size * 4
        max_size = parse_size(training_args.trunk_cache_max_size, "--trunk_cache_max_size") if training_args.trunk_cache_max_size else None
        provenance = {"model": model_args.model_name_or_path + (" (random weights)" if model_args.weights == "random" else ""), "data": data.source}
        cached = cached_splits(
            model, tokenized, batch_size, training_args.trunk_cache_dir, cache_dtype, autocast, training_args.verify_trunk_cache, provenance, max_size
        )
    splits, collator = cached or (tokenized.splits, tokenized.collator)
    if cached is None:
        logger.info("Training the whole model on token ids (nothing frozen to cache, or --cache_frozen_trunk false).")

    batch = training_args.per_device_eval_batch_size
    train_eval = _first_batches(splits["train"], data_args.train_eval_batches, batch)
    callbacks = [ChecksumManifest(), *(callbacks or [])]
    if training_args.early_stopping_patience:
        callbacks.append(ValidationEarlyStopping(training_args.early_stopping_patience))
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset={"validation": splits["validation"], "train": train_eval},
        data_collator=collator,
        processing_class=gpt2_tokenizer(model.config.context_length),
        compute_metrics=make_compute_metrics(len(label_names), data.problem_type, data_args.threshold),
        callbacks=callbacks,
    )
    warn_if_fsdp_ignored(trainer)
    results: dict = {f"dropped_rows_{name}": len(rows) for name, rows in data.dropped.items()}
    if cached is not None:
        results |= cache_record(splits)
    if data_args.initial_eval_batches:
        for split, prefix in (("train", "initial_train"), ("validation", "initial_eval"), ("test", "initial_test")):
            results.update(trainer.evaluate(_first_batches(splits[split], data_args.initial_eval_batches, batch), metric_key_prefix=prefix))
        trainer.log_metrics("initial", {k: v for k, v in results.items() if k.startswith("initial") and k.endswith(("accuracy", "loss"))})

    train_result = trainer.train(resume_from_checkpoint=resume)
    results.update({k: v for k, v in train_result.metrics.items() if k != "train_loss"})
    results["train_running_loss"] = train_result.metrics["train_loss"]
    results.update(_final_metrics(trainer, splits, len(label_names), data.problem_type, data_args.threshold))
    shown = ("accuracy", "loss", "f1", "f1_micro", "f1_macro", "exact_match", "mse", "mae", "pearson", "spearman")
    trainer.log_metrics("final", {k: v for k, v in results.items() if k.split("_", 1)[0] in ("train", "eval", "test") and k.endswith(shown)})

    if model_args.trainable_layers == "lora":
        trainer.model = trainer.model.merge_and_unload()  # the saved and pushed model is a plain classifier
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        trainer.save_metrics("all", results, combined=False)
        plot_history(
            trainer.state.log_history,
            output_dir,
            examples_per_epoch=len(trainer.get_train_dataloader()) * training_args.per_device_train_batch_size * training_args.world_size,
            train_accuracy_examples=(len(train_eval), len(splits["train"])),
        )
        trainer.model_card = build_model_card(
            training_args.hub_model_id or str(output_dir),
            model_args,
            data_args,
            training_args,
            results,
            label_names,
            data.source,
            data.source if data_args.dataset_name and not Path(data_args.dataset_name).exists() else None,
            _examples(data.splits["validation"]),
            data.problem_type,
        )
        trainer.model_card.save(output_dir / "README.md")
    if training_args.push_to_hub:
        # Trainer's push: saves the model (weights, config, code, tokenizer), waits for any checkpoint
        # push, then uploads the output folder without checkpoint-* folders
        commit = trainer.push_to_hub(commit_message="hf_spam: finetuned classifier")
        if trainer.is_world_process_zero():
            logger.info("Pushed to %s", commit.repo_url)
    else:
        trainer.save_model()  # weights, config, model code, tokenizer
    if trainer.is_world_process_zero() and not training_args.keep_checkpoints:
        remove_checkpoints(output_dir)
    return results


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


def choose_best_metric(args: SpamTrainingArguments, problem_type: str) -> None:
    """"Best" for regression and multi-label: the default (validation accuracy) has no meaning for numbers and
    counts every class decision for sets, so the lowest validation MSE, or the highest validation micro-F1,
    is chosen instead, with a log line. A metric the problem type does not report is an error."""
    if args.metric_for_best_model is None or problem_type == SINGLE_LABEL:
        return
    metric, greater = ("validation_mse", False) if problem_type == REGRESSION else ("validation_f1_micro", True)
    if args.metric_for_best_model == "validation_accuracy":
        logger.info("Best model: %s (%s is the default of single-label classification).", metric, args.metric_for_best_model)
        args.metric_for_best_model, args.greater_is_better = metric, greater
        return
    available = ("loss", "mse", "mae", "pearson", "spearman") if problem_type == REGRESSION else (
        "loss", "f1_micro", "f1_macro", "exact_match", "accuracy", "precision_micro", "recall_micro")
    name = args.metric_for_best_model.split("_", 1)[1]
    if name not in available:
        raise DataError(f"--metric_for_best_model {args.metric_for_best_model}: {problem_type} reports {', '.join(available)}.")
    args.greater_is_better = name not in ("loss", "mse", "mae")  # Trainer's guess counts only names ending in "loss" as errors


def _final_metrics(trainer: SpamTrainer, splits, num_labels: int, problem_type: str, threshold: float) -> dict:
    """Every split's metrics with the final model; the test split's also per class (with its confusion
    matrix for single-label classes), or per target."""
    results = {}
    train_eval = trainer.evaluate(splits["train"], metric_key_prefix="train")
    # keep the training run's train_runtime/train_samples_per_second: the evaluation's would overwrite them
    results.update({k: v for k, v in train_eval.items() if not k.endswith(TIMING_KEYS)})
    results.update(trainer.evaluate(splits["validation"], metric_key_prefix="eval"))
    test = trainer.predict(splits["test"], metric_key_prefix="test")  # one pass: metrics and confusion matrix
    results.update(test.metrics)
    full = metric_results(metric_for(problem_type, num_labels), test.predictions, test.label_ids, problem_type, num_labels, threshold)
    results.update({f"test_{k}": v for k, v in full.items() if not isinstance(v, float)})
    return results
