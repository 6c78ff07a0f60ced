"""GPT-2 tokenization with the book's padding choices, and the numbers the chapter prints about the splits."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import DataCollatorWithPadding

from ..tokenizer import END_OF_TEXT, gpt2_tokenizer, tiktoken_gpt2

logger = logging.getLogger(__name__)


PADDINGS = ("longest_train", "max_length", "dynamic", "none")


@dataclass
class TokenizedData:
    """Tokenized splits plus what the chapter prints about them."""

    splits: DatasetDict
    padding: str
    max_length: int | None  # the length every example is padded/truncated to, if fixed
    truncated: dict[str, int] = field(default_factory=dict)  # per split: texts cut to fit
    collator: DataCollatorWithPadding | None = None  # pads each batch (dynamic / no padding)
    truncation_length: int = 1024  # every text was cut to its first that many tokens


def _gpt2_ids(batch: dict) -> dict:
    """tiktoken's GPT-2 ids for a batch of texts. ``datasets`` fingerprints a map function by pickling it and
    what it refers to: a closure over the ``Encoding`` pickled GPT-2's 50k-entry table once per split (most
    of the tokenization's time); this function finds the encoding through :func:`tiktoken_gpt2` when it runs."""
    return {"input_ids": tiktoken_gpt2().encode_batch(batch["text"], allowed_special={END_OF_TEXT})}


def tokenize(
    splits: DatasetDict, padding: str = "longest_train", *, max_length: int | None = None, context_length: int = 1024
) -> TokenizedData:
    """tiktoken's GPT-2 ids with the book's padding choices.

    - ``longest_train`` (the book): pad every split to the longest training text; longer
      validation/test texts are truncated to it.
    - ``max_length``: pad to ``max_length`` (exercise 6.1: the context length, 1024).
    - ``dynamic``: pad each batch to its longest member (a data collator).
    - ``none``: no padding (batch size 1, bonus row 14).
    Texts longer than the model's ``context_length`` are always truncated; every truncation is counted
    and logged. Pads are ``<|endoftext|>`` (50256) with ``attention_mask`` 0.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}.")
    pad_id = tiktoken_gpt2().eot_token
    encoded = splits.map(_gpt2_ids, batched=True, desc="Tokenizing")
    limit = context_length
    if padding == "longest_train":
        limit = min(max(len(ids) for ids in encoded["train"]["input_ids"]), context_length)
    elif padding == "max_length":
        limit = min(max_length or context_length, context_length)
    truncated = {name: sum(len(ids) > limit for ids in split["input_ids"]) for name, split in encoded.items()}
    for name, count in truncated.items():
        if count:
            logger.warning("%d %s texts are longer than %d tokens and were truncated.", count, name, limit)
    fixed = padding in ("longest_train", "max_length")

    def pad(batch: dict) -> dict:
        ids = [row[:limit] for row in batch["input_ids"]]
        if not fixed:
            return {"input_ids": ids}
        return {
            "input_ids": [row + [pad_id] * (limit - len(row)) for row in ids],
            "attention_mask": [[1] * len(row) + [0] * (limit - len(row)) for row in ids],
        }

    tokenized = encoded.map(pad, batched=True, desc="Padding").remove_columns("text")
    collator = None if fixed else DataCollatorWithPadding(gpt2_tokenizer(context_length))
    return TokenizedData(tokenized, padding, limit if fixed else None, truncated, collator, limit)


def describe(splits: DatasetDict, tokenized: TokenizedData | None = None, batch_size: int = 8, label_names: list[str] | None = None) -> str:
    """The numbers the chapter prints: class counts, split sizes, longest sequence, batches of ``batch_size``
    (``label_names``: the classes of a multi-label split, whose labels are 0/1 vectors)."""
    lines = []
    for name, split in splits.items():
        drop_last = name == "train"
        batches = len(split) // batch_size if drop_last else -(-len(split) // batch_size)
        row = f"{name}: {len(split)} rows ({_label_summary(split, label_names)}), {batches} batches of {batch_size}"
        if tokenized is not None:
            lengths = (
                [sum(m) for m in tokenized.splits[name]["attention_mask"]]
                if "attention_mask" in tokenized.splits[name].column_names
                else [len(x) for x in tokenized.splits[name]["input_ids"]]
            )
            row += f", longest {max(lengths)} tokens, truncated {tokenized.truncated.get(name, 0)}"
        lines.append(row + (" (drop_last)" if drop_last else ""))
    lines.append(duplicate_report(splits))
    if tokenized is not None:
        lines.append(f"padding: {tokenized.padding}" + (f" to {tokenized.max_length} tokens" if tokenized.max_length else ""))
    return "\n".join(lines)


def _label_summary(split: Dataset, label_names: list[str] | None = None) -> str:
    """Rows per class (single-label), rows with each class (multi-label), or the targets' range (regression)."""
    feature = split.features["label"]
    if isinstance(feature, ClassLabel):
        counts = Counter(split["label"])
        return ", ".join(f"{feature.names[k]} {counts[k]}" for k in sorted(counts))
    values = np.asarray(split["label"], dtype=np.float64)
    if values.ndim == 2 and set(np.unique(values)) <= {0.0, 1.0}:
        names = label_names if label_names and len(label_names) == values.shape[1] else [str(k) for k in range(values.shape[1])]
        return "rows with each class: " + ", ".join(f"{name} {int(n)}" for name, n in zip(names, values.sum(0), strict=True))
    return f"targets from {values.min():.4g} to {values.max():.4g}, mean {values.mean():.4g}"


def cross_split_duplicates(splits: DatasetDict) -> dict[str, int]:
    """Per split other than train: how many of its distinct texts also occur in the training split."""
    train = set(splits["train"]["text"]) if "train" in splits else set()
    return {name: sum(t in train for t in set(split["text"])) for name, split in splits.items() if name != "train"}


def duplicate_report(splits: DatasetDict) -> str:
    """Repeated texts are kept (as the book keeps them); say how many, and how many cross splits."""
    within = {name: len(split) - len(set(split["text"])) for name, split in splits.items()}
    return (
        "duplicate texts kept (as the book does): "
        + ", ".join(f"{name} {count} repeats" for name, count in within.items())
        + "; also in train: "
        + ", ".join(f"{name} {count}" for name, count in cross_split_duplicates(splits).items())
    )
