"""Train only what trains: run the frozen part of the classifier once, then train its top on the cache.

Chapter 6 freezes everything below the last block. With no dropout in that frozen prefix its output
is a fixed function of the input, so computing it every step of every epoch (as the book and a
plain ``Trainer`` do) repeats the same work five times. Here the prefix runs once per example under
``inference_mode``; training and evaluation then feed the cached states to the classifier's own
``forward(prefix_hidden_states=..., prefix_depth=...)``, which runs only blocks ``[depth:]``,
``final_norm`` and the head. ``Trainer`` therefore always holds the real classifier: its checkpoints
are complete models, and a run can resume a checkpoint of an uncached run and vice versa. The result
is the same computation (a test checks loss and gradients against the uncached model on the same
batch); only the order of floating-point work differs.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import torch
from datasets import Dataset

from .modeling_gpt import GPTForSequenceClassification

logger = logging.getLogger(__name__)


def frozen_depth(model: GPTForSequenceClassification) -> int:
    """How many leading blocks can be cached: embeddings and blocks with no trainable parameter, no dropout.

    0 means nothing can be cached (trainable embeddings, dropout, or adapters everywhere).
    """
    trunk = model.model
    if model.config.drop_rate > 0 or any(p.requires_grad for p in (*trunk.tok_emb.parameters(), *trunk.pos_emb.parameters())):
        return 0
    depth = 0
    for block in trunk.trf_blocks:
        if any(p.requires_grad for p in block.parameters()):
            break
        depth += 1
    return depth


class CachedPrefix(torch.utils.data.Dataset):
    """One example per item: the prefix's hidden states for its tokens (after ``depth`` blocks), plus ids, mask and label."""

    def __init__(
        self, hidden: list[torch.Tensor], input_ids: list[list[int]], attention_mask: list[list[int]], labels: list[int], depth: int
    ) -> None:
        self.hidden, self.input_ids, self.attention_mask, self.labels, self.depth = hidden, input_ids, attention_mask, labels, depth

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {
            "prefix_hidden_states": self.hidden[index],
            "prefix_depth": self.depth,
            "input_ids": self.input_ids[index],  # also gives Trainer's length-grouped sampler its lengths
            "attention_mask": self.attention_mask[index],
            "labels": self.labels[index],
        }

    def select(self, indices) -> CachedPrefix:
        indices = list(indices)
        columns = (self.hidden, self.input_ids, self.attention_mask, self.labels)
        return CachedPrefix(*([column[i] for i in indices] for column in columns), self.depth)


def pad_ids(features: list[dict], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``input_ids`` (with ``pad_token_id``) and ``attention_mask`` (with 0) to the longest example."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(features), width, dtype=torch.long)
    for row, feature in enumerate(features):
        length = len(feature["input_ids"])
        input_ids[row, :length] = torch.tensor(feature["input_ids"])
        attention_mask[row, :length] = torch.tensor(feature["attention_mask"])
    return input_ids, attention_mask


def collate_cached(features: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """A batch of cached examples, right-padded; pad hidden states are zeros (causal attention never reads them)."""
    input_ids, attention_mask = pad_ids(features, pad_token_id)
    first = features[0]["prefix_hidden_states"]
    hidden = torch.zeros(*input_ids.shape, first.shape[-1], dtype=first.dtype)
    for row, feature in enumerate(features):
        hidden[row, : len(feature["input_ids"])] = feature["prefix_hidden_states"]
    return {
        "prefix_hidden_states": hidden,
        "prefix_depth": features[0]["prefix_depth"],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor([f["labels"] for f in features]),
    }


@torch.inference_mode()
def cache_prefix(model: GPTForSequenceClassification, dataset: Dataset, depth: int, batch_size: int = 32) -> CachedPrefix:
    """Run embeddings + blocks ``[0, depth)`` over ``dataset`` once, in length-sorted batches.

    Each example keeps the hidden states of its own positions (pads included when the data was padded
    to a fixed length, as ``last`` pooling reads them); sorting by length keeps batch padding near zero.
    """
    was_training = model.training
    model.eval()
    input_ids, labels = dataset["input_ids"], dataset["label"]
    attention_mask = dataset["attention_mask"] if "attention_mask" in dataset.column_names else [[1] * len(ids) for ids in input_ids]
    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
    hidden: list[torch.Tensor | None] = [None] * len(input_ids)
    device = next(model.parameters()).device
    pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad_ids([{"input_ids": input_ids[i], "attention_mask": attention_mask[i]} for i in rows], pad_token_id)
        out = model.model.prefix(ids.to(device), model.trunk_mask(mask.to(device)), depth)
        for offset, i in enumerate(rows):
            hidden[i] = out[offset, : len(input_ids[i])].clone()
    model.train(was_training)
    return CachedPrefix(hidden, input_ids, attention_mask, labels, depth)


def cached_splits(model: GPTForSequenceClassification, data, batch_size: int = 32) -> tuple[dict[str, CachedPrefix], Callable] | None:
    """Every split of ``data`` (a ``TokenizedData``) as cached prefixes, with their collator; ``None``
    when nothing can be cached exactly (see :func:`frozen_depth`)."""
    depth = frozen_depth(model) if isinstance(model, GPTForSequenceClassification) else 0
    if not depth:
        return None
    started = time.perf_counter()
    cached = {name: cache_prefix(model, split, depth, batch_size) for name, split in data.splits.items()}
    logger.info(
        "Cached the frozen embeddings + %d blocks for %d examples in %.1f s.",
        depth,
        sum(map(len, cached.values())),
        time.perf_counter() - started,
    )
    return cached, functools.partial(collate_cached, pad_token_id=model.config.pad_token_id)
