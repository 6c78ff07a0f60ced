"""What a cached prefix depends on, hashed into its key: the model's config (less the head's fields), the frozen
tensors, the depth and dtypes, and a split's token ids and masks; and which examples share their rows (identical
inputs give identical prefix rows). Any change gives a new key, never a stale read (see ``hf_spam.cache``)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset

from ..models.gpt.modeling_gpt import GPTForSequenceClassification
from ..models.gpt.pooled_position import blocks_mask
from . import store
from .rows import STORAGE

# Config fields that only the classifier's head reads (never the embeddings or blocks a cache holds):
# they stay out of the key, so relabelling or another pooling reuses the prefix. Every other field is in
# the key, so a field added later can only cost a rebuild, never a stale read.
HEAD_ONLY_FIELDS = frozenset(
    {"id2label", "label2id", "num_labels", "problem_type", "pooling", "padded_length", "loss_ignore_index", "architectures"}
)
# Bookkeeping that transformers writes into a config and that computes nothing.
BOOKKEEPING_FIELDS = frozenset({"transformers_version", "_name_or_path", "auto_map", "_commit_hash"})


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


def prefix_config(model: GPTForSequenceClassification) -> dict:
    """The model's whole config as a dict, less what only the head reads (``HEAD_ONLY_FIELDS``)."""
    config = model.config.to_dict()
    return {k: v for k, v in config.items() if k not in HEAD_ONLY_FIELDS | BOOKKEEPING_FIELDS}


def model_fingerprint(model: GPTForSequenceClassification, depth: int, dtype: torch.dtype, autocast: torch.dtype | None = None) -> str:
    """sha256 of everything the prefix's output depends on besides the tokens: the config (all of it
    but the head's fields), the frozen tensors, the depth, the dtypes, whether the blocks read the mask."""
    digest = hashlib.sha256()
    gpt = model.model
    settings = {
        "format": store.CACHE_FORMAT,
        "depth": depth,
        "config": prefix_config(model),
        "reads_mask": blocks_mask(model.config.pooling, torch.ones(1, 1)) is not None,
        "storage": STORAGE[dtype][0],
        "compute": str(next(model.parameters()).dtype),
        "autocast": str(autocast),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    frozen = {"tok_emb": gpt.tok_emb, "pos_emb": gpt.pos_emb, **{f"trf_blocks.{i}": gpt.trf_blocks[i] for i in range(depth)}}
    for owner, module in frozen.items():
        for name, tensor in module.state_dict().items():
            digest.update(f"{owner}.{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def token_lengths(dataset: Dataset) -> np.ndarray:
    """Token count of every example, from the Arrow buffers (no Python lists of ids)."""
    parts = [
        pc.list_value_length(batch.column("input_ids")).to_numpy(zero_copy_only=False)
        for batch in dataset.with_format("arrow", columns=["input_ids"]).iter(batch_size=65536)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def tokens_fingerprint(dataset: Dataset) -> str:
    """sha256 of a split's token ids and attention masks (the Arrow buffers, batch by batch)."""
    digest = hashlib.sha256()
    columns = [c for c in ("input_ids", "attention_mask") if c in dataset.column_names]
    for batch in dataset.with_format("arrow", columns=columns).iter(batch_size=4096):
        for column in columns:
            values = batch.column(column).combine_chunks()
            digest.update(column.encode())
            digest.update(pc.list_value_length(values).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
            digest.update(values.flatten().to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    return digest.hexdigest()


def first_copies(dataset: Dataset, examples: np.ndarray) -> np.ndarray:
    """For each of ``examples``, the first of ``examples`` with the same token ids and mask (itself if none).

    Identical inputs give identical prefix rows, so duplicates (~10 % of the SMS tokens are in repeated
    messages) are computed and stored once and share their rows; compared by sha256 of their ids and mask.
    """
    columns = [c for c in ("input_ids", "attention_mask") if c in dataset.column_names]
    table = dataset.select(examples).with_format("arrow", columns=columns)
    first: dict[bytes, int] = {}
    copies, position = np.empty(len(examples), dtype=np.int64), 0
    for batch in table.iter(batch_size=4096):
        arrays = [batch.column(c).combine_chunks() for c in columns]
        offsets = [a.offsets.to_numpy() for a in arrays]
        values = [a.values.to_numpy(zero_copy_only=False).astype(np.int64) for a in arrays]
        for row in range(batch.num_rows):
            digest = hashlib.sha256()
            for offset, value in zip(offsets, values, strict=True):
                digest.update(value[offset[row] : offset[row + 1]].tobytes())
                digest.update(b"|")
            copies[position] = first.setdefault(digest.digest(), int(examples[position]))
            position += 1
    return copies
