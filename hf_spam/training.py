"""Chapter 6's finetuning run with ``Trainer``: the book's recipe as defaults, every Trainer option open.

``scripts/train.py`` parses :class:`ModelArguments`, :class:`DataArguments` and
:class:`SpamTrainingArguments` with ``HfArgumentParser`` and calls :func:`run`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import evaluate
import numpy as np
import torch
from datasets import Dataset
from huggingface_hub import HfApi
from safetensors import safe_open
from transformers import AutoConfig, EvalPrediction, Trainer, TrainingArguments, set_seed

from .cached_trunk import ClassifierTop, cache_prefix, collate_cached, frozen_depth
from .configuration_gpt import GPTConfig
from .data import TokenizedData, describe, load_sms_spam, load_text_classification, tokenize
from .modeling_gpt import GPTForSequenceClassification
from .plots import plot_history
from .tokenizer import gpt2_tokenizer, save_with_tokenizer

logger = logging.getLogger(__name__)

METRIC_PATH = Path(__file__).parent / "metrics" / "classification"
TIMING_KEYS = ("_runtime", "_per_second", "_model_preparation_time")
TRAINABLE_LAYERS = ("last_layer", "last_block", "last_two_blocks", "all", "lora")
# appendix E puts LoRA on every Linear layer of the trunk; the new head is trained in full
LORA_TARGETS = ["W_query", "W_key", "W_value", "out_proj", "layers.0", "layers.2"]


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
        default="last_non_pad", metadata={"help": "Token the classifier reads.", "choices": ["last_non_pad", "last", "first", "mean"]}
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank (appendix E: 16)."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (appendix E: 16)."})


@dataclass
class DataArguments:
    """The data: the SMS Spam Collection by default, or any text-classification dataset."""

    data_file: str | None = field(default=None, metadata={"help": "Local SMSSpamCollection or the UCI zip (default: download it once)."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Instead of SMS: a Hub dataset id or local CSV/TSV/JSON(L)/Parquet file(s)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    text_column: str = field(default="text", metadata={"help": "Text column of --dataset_name."})
    label_column: str = field(default="label", metadata={"help": "Label column of --dataset_name."})
    balance: bool = field(
        default=False, metadata={"help": "Undersample --dataset_name's classes to the smallest (SMS is always balanced, as the book)."}
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
    train_eval_batches: int = field(
        default=5, metadata={"help": "Training batches whose accuracy is measured every evaluation (book: eval_iter=5)."}
    )


@dataclass
class SpamTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with chapter 6's defaults: AdamW lr 5e-5, weight decay 0.1 on every
    parameter, constant rate, no clipping, 5 epochs, batch 8, seed 123, evaluation every epoch."""

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
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing (the final model is always saved)."})
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

    def __post_init__(self) -> None:
        # accelerate treats a multi-process CPU launch (torchrun, accelerate launch) as distributed only
        # with use_cpu=True; without it every process silently trains alone on all the data as rank 0.
        if not self.use_cpu and not _has_accelerator():
            self.use_cpu = True
        super().__post_init__()


def _has_accelerator() -> bool:
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()


class SpamTrainer(Trainer):
    """``Trainer`` with the book's two optimizer/data details, and a record of the data each process saw."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.example_fingerprints: list[str] = []

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """The book's ``AdamW(model.parameters(), weight_decay=0.1)`` decays everything. Trainer's default
        spares parameters by name: biases and ``final_norm`` (``_norm``), but not ``norm1``/``norm2``:
        an accident of the book's names, so the book's rule is the default here."""
        if self.args.weight_decay_scope == "book":
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def get_eval_dataloader(self, eval_dataset=None):
        with _eval_keeps_last_batch(self.args):
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        with _eval_keeps_last_batch(self.args):
            return super().get_test_dataloader(test_dataset)

    def training_step(self, model, inputs, num_items_in_batch=None):
        for row in inputs["input_ids"].tolist():
            self.example_fingerprints.append(hashlib.sha1(str(row).encode()).hexdigest()[:16])
        return super().training_step(model, inputs, num_items_in_batch)


@contextlib.contextmanager
def _eval_keeps_last_batch(args: TrainingArguments):
    """The book drops the last partial batch in training only (``drop_last=True`` on ``train_loader``)."""
    saved = args.dataloader_drop_last
    args.dataloader_drop_last = False
    try:
        yield
    finally:
        args.dataloader_drop_last = saved


def load_metric() -> evaluate.EvaluationModule:
    """The package's local evaluate module (``evaluate.load("accuracy")`` would need the Hub)."""
    return evaluate.load(str(METRIC_PATH))


def make_compute_metrics(num_labels: int):
    metric = load_metric()

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        results = metric.compute(predictions=np.argmax(logits, axis=-1), references=prediction.label_ids, num_labels=num_labels)
        results.pop("confusion_matrix")  # Trainer logs scalars; the final matrix is computed separately
        return results

    return compute_metrics


def build_model(args: ModelArguments, id2label: dict[int, str], seed: int) -> GPTForSequenceClassification:
    """The classifier: OpenAI's weights (or a saved hf_spam model), or a fresh random one."""
    task = {"num_labels": len(id2label), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}, "pooling": args.pooling}
    set_seed(seed)
    if args.weights == "random":
        config = (
            GPTConfig.from_preset(args.model_name_or_path, **task)
            if _is_preset(args.model_name_or_path)
            else GPTConfig.from_pretrained(args.model_name_or_path, **task)
        )
        if args.config_overrides:
            config.update_from_string(args.config_overrides)
            config.validate_book_fields()
        return GPTForSequenceClassification(config)
    if args.config_overrides:
        task.update(_parse_overrides(args.config_overrides))
    if os.path.isdir(args.model_name_or_path) and AutoConfig.from_pretrained(args.model_name_or_path).model_type == GPTConfig.model_type:
        return GPTForSequenceClassification.from_pretrained(args.model_name_or_path, ignore_mismatched_sizes=True, **task)
    return GPTForSequenceClassification.from_gpt2(args.model_name_or_path, **task)


def _is_preset(name: str) -> bool:
    try:
        GPTConfig.from_preset(name)
    except ValueError:
        return False
    return True


def _parse_overrides(overrides: str) -> dict:
    """``"drop_rate=0.1,pooling=mean"`` -> a dict, typed like ``GPTConfig``'s defaults (as ``update_from_string``)."""
    probe = GPTConfig()
    probe.update_from_string(overrides)
    return {key: getattr(probe, key) for key in (item.split("=")[0].strip() for item in overrides.split(","))}


def configure_trainable(model: GPTForSequenceClassification, args: ModelArguments):
    """Freeze as chapter 6 does (the new head always trains); ``lora`` returns a PEFT model."""
    if args.trainable_layers == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, target_modules=LORA_TARGETS, modules_to_save=["out_head"])
        return get_peft_model(model, lora)
    trainable = {
        "last_layer": [],
        "last_block": [model.model.trf_blocks[-1], model.model.final_norm],
        "last_two_blocks": [*model.model.trf_blocks[-2:], model.model.final_norm],
        "all": [model],
    }[args.trainable_layers]
    for param in model.parameters():
        param.requires_grad = False
    for module in [*trainable, model.out_head]:
        for param in module.parameters():
            param.requires_grad = True
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


def load_data(data_args: DataArguments):
    if data_args.dataset_name:
        return load_text_classification(
            data_args.dataset_name,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            config_name=data_args.dataset_config_name,
            balance=data_args.balance,
        )
    return load_sms_spam(data_args.data_file)


def checkpoint_problem(folder: Path, needs_optimizer: bool = True) -> str | None:
    """Why ``folder`` cannot be resumed from (``None`` if it can). ``trainer_state.json`` is written
    last, so a checkpoint killed while saving lacks it or has it truncated."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (saving was interrupted)"
    try:
        json.loads(state.read_text())
    except ValueError:
        return "trainer_state.json is truncated"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return "no model.safetensors"
    try:
        with safe_open(weights, framework="pt") as handle:
            handle.keys()
    except Exception as error:  # safetensors raises its own error types for bad headers
        return f"model.safetensors is unreadable ({error})"
    if needs_optimizer and not (folder / "optimizer.pt").is_file():
        return "no optimizer.pt"
    return None


def resolve_checkpoint(resume: str | None, output_dir: Path, needs_optimizer: bool = True) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``last`` for the newest complete one in
    ``output_dir``. Incomplete checkpoints are skipped with a message, never loaded."""
    if resume is None:
        return None
    if resume != "last":
        problem = checkpoint_problem(Path(resume), needs_optimizer)
        if problem:
            raise ValueError(f"Cannot resume from {resume}: {problem}. Pass --resume_from_checkpoint last to use the newest complete one.")
        return resume
    candidates = sorted(
        output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1, reverse=True
    )
    for folder in candidates:
        problem = checkpoint_problem(folder, needs_optimizer)
        if problem is None:
            logger.info("Resuming from %s.", folder)
            return str(folder)
        logger.warning("Skipping %s: %s.", folder, problem)
    logger.warning("No complete checkpoint in %s; training from the start.", output_dir)
    return None


def prepare_trainee(model: torch.nn.Module, data: TokenizedData, args: SpamTrainingArguments):
    """(module Trainer trains, its splits, its collator): the classifier's top on a cached frozen prefix
    when that is exact (see ``cached_trunk``), else the whole model on token ids."""
    depth = frozen_depth(model) if args.cache_frozen_trunk and isinstance(model, GPTForSequenceClassification) else 0
    if not depth:
        logger.info("Training the whole model on token ids (nothing frozen to cache, or --cache_frozen_trunk false).")
        return model, data.splits, data.collator
    started = time.perf_counter()
    cached = {name: cache_prefix(model, split, depth, args.per_device_eval_batch_size * 4) for name, split in data.splits.items()}
    logger.info(
        "Cached the frozen embeddings + %d blocks for %d examples in %.1f s.",
        depth,
        sum(map(len, cached.values())),
        time.perf_counter() - started,
    )
    return ClassifierTop(model, depth), cached, functools.partial(collate_cached, pad_token_id=model.config.pad_token_id)


def _first_batches(dataset: Dataset, batches: int, batch_size: int) -> Dataset:
    return dataset.select(range(min(len(dataset), batches * batch_size)))


def run(model_args: ModelArguments, data_args: DataArguments, training_args: SpamTrainingArguments) -> dict[str, float]:
    """Prepare the data, finetune, evaluate on all splits, save model + tokenizer + code + card + plots."""
    output_dir = Path(training_args.output_dir)
    splits = load_data(data_args)
    label_names = splits["train"].features["label"].names
    model = build_model(model_args, dict(enumerate(label_names)), training_args.seed)
    context_length = min(data_args.context_length or model.config.context_length, model.config.context_length)
    data = tokenize(splits, data_args.padding, max_length=data_args.max_length, context_length=context_length)
    if training_args.process_index == 0:
        logger.info("Data:\n%s", describe(splits, data, training_args.per_device_train_batch_size))
    model = configure_trainable(model, model_args)
    trainable, total = count_parameters(model)
    logger.info("Trainable parameters: %s of %s (%s)", f"{trainable:,}", f"{total:,}", model_args.trainable_layers)
    trainee, splits_in, collator = prepare_trainee(model, data, training_args)

    batch = training_args.per_device_eval_batch_size
    trainer = SpamTrainer(
        model=trainee,
        args=training_args,
        train_dataset=splits_in["train"],
        eval_dataset={
            "validation": splits_in["validation"],
            "train": _first_batches(splits_in["train"], data_args.train_eval_batches, batch),
        },
        data_collator=collator,
        compute_metrics=make_compute_metrics(len(label_names)),
    )
    results: dict[str, float] = {}
    if data_args.initial_eval_batches:
        for split, prefix in (("train", "initial_train"), ("validation", "initial_eval"), ("test", "initial_test")):
            subset = _first_batches(splits_in[split], data_args.initial_eval_batches, batch)
            results.update(trainer.evaluate(subset, metric_key_prefix=prefix))
        trainer.log_metrics("initial", {k: v for k, v in results.items() if k.endswith(("accuracy", "loss"))})

    resume = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir, not training_args.save_only_model)
    train_result = trainer.train(resume_from_checkpoint=resume)
    results.update({k: v for k, v in train_result.metrics.items() if k != "train_loss"})
    results["train_running_loss"] = train_result.metrics["train_loss"]
    train_eval = trainer.evaluate(splits_in["train"], metric_key_prefix="train")
    # keep the training run's train_runtime/train_samples_per_second: the evaluation's would overwrite them
    results.update({k: v for k, v in train_eval.items() if not k.endswith(TIMING_KEYS)})
    results.update(trainer.evaluate(splits_in["validation"], metric_key_prefix="eval"))
    test = trainer.predict(splits_in["test"], metric_key_prefix="test")  # one pass: metrics and confusion matrix
    results.update(test.metrics)
    matrix = load_metric().compute(predictions=test.predictions.argmax(-1), references=test.label_ids, num_labels=len(label_names))
    results["test_confusion_matrix"] = matrix["confusion_matrix"]
    trainer.log_metrics(
        "final",
        {k: v for k, v in results.items() if k.split("_", 1)[0] in ("train", "eval", "test") and k.endswith(("accuracy", "loss", "f1"))},
    )

    if trainer.is_world_process_zero():
        final = model.merge_and_unload() if model_args.trainable_layers == "lora" else model
        if data.max_length is not None:
            final.config.padded_length = data.max_length  # inference pads the same way ('last' pooling reads a pad)
        save_with_tokenizer(final, output_dir, gpt2_tokenizer(final.config.context_length))
        trainer.save_metrics("all", results, combined=False)
        examples_per_epoch = len(trainer.get_train_dataloader()) * training_args.per_device_train_batch_size * training_args.world_size
        plot_history(trainer.state.log_history, output_dir, examples_per_epoch)
        write_model_card(output_dir, model_args, data_args, training_args, results, label_names)
        if training_args.push_to_hub:
            push_folder(output_dir, training_args.hub_model_id or output_dir.name, training_args.hub_token, training_args.hub_private_repo)
    fingerprints = {"rank": training_args.process_index, "examples": trainer.example_fingerprints}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"data_seen_rank{training_args.process_index}.json").write_text(json.dumps(fingerprints))
    return results


def push_folder(folder: Path, repo_id: str, token: str | None = None, private: bool | None = None) -> str:
    """Upload exactly ``folder`` (weights, config, code, tokenizer, card, plots) to the Hub."""
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, exist_ok=True, private=private)
    api.upload_folder(
        repo_id=repo.repo_id,
        folder_path=str(folder),
        commit_message="Upload hf_spam classifier",
        ignore_patterns=["checkpoint-*", "data_seen_rank*"],
    )
    return repo.repo_id


def write_model_card(output_dir: Path, model_args, data_args, training_args, results: dict, label_names: list[str]) -> None:
    """A Hub model card with the dataset, the recipe, the measured metrics and how to use the model."""
    dataset = data_args.dataset_name or "UCI SMS Spam Collection (balanced 747/747, split 70/10/20 with seed 123, as in chapter 6)"
    rows = "\n".join(
        f"| {split} | {results.get(f'{prefix}_accuracy', float('nan')) * 100:.2f} % | {results.get(f'{prefix}_f1', float('nan')):.4f} | {results.get(f'{prefix}_loss', float('nan')):.4f} |"
        for split, prefix in (("train", "train"), ("validation", "eval"), ("test", "test"))
    )
    recipe = asdict(model_args) | {k: v for k, v in asdict(data_args).items() if v is not None}
    recipe |= {
        k: getattr(training_args, k)
        for k in ("learning_rate", "weight_decay", "weight_decay_scope", "num_train_epochs", "per_device_train_batch_size", "seed")
    }
    card = f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [hf_spam, gpt2, text-classification]
---
# GPT classifier finetuned with hf_spam

The from-scratch GPT of *Build a Large Language Model (From Scratch)*, chapter 6, finetuned as a
text classifier with `Trainer`. Labels: {", ".join(f"{i} = {name}" for i, name in enumerate(label_names))}.

- **Dataset**: {dataset}
- **Weights**: {model_args.weights} ({model_args.model_name_or_path}{", " + model_args.config_overrides if model_args.config_overrides else ""})

## Results (measured by this run)

| split | accuracy | F1 | loss |
|---|---|---|---|
{rows}

Test confusion matrix (rows: true, columns: predicted): `{results.get("test_confusion_matrix")}`

## Use

```python
from transformers import pipeline
classify = pipeline("text-classification", model="{training_args.hub_model_id or output_dir}", trust_remote_code=True)
classify("You are a winner you have been specially selected to receive $1000 cash or a $2000 award.")
```

`trust_remote_code=True` runs the model code stored next to the weights (`modeling_gpt.py`,
`configuration_gpt.py`, `convert_gpt2.py`). `model.to_gpt2()` turns the model into a stock
`GPT2ForSequenceClassification` that needs no custom code.

## Recipe

```json
{json.dumps(recipe, indent=2, default=str)}
```
"""
    (output_dir / "README.md").write_text(card)
