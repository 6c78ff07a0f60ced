"""Reading the prefix cache: one training example per item (the prefix's hidden states, read with ``os.pread``
and checked against their checksum, with the example's ids, mask and label), and the collator that pads a batch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from ..errors import CacheError
from . import store

# storage dtype -> (its name in meta.json, the dtype its raw bytes are read as)
STORAGE = {torch.float32: ("float32", torch.float32), torch.bfloat16: ("bfloat16", torch.int16), torch.float16: ("float16", torch.float16)}


class CachedPrefix(torch.utils.data.Dataset):
    """One example per item: the prefix's hidden states for its tokens (read from the cache on disk),
    plus its ids, mask and label (from the tokenized split).

    Every read is checked against the row checksum written at build time (xxh3, a few microseconds per
    example), so bytes damaged after the cache was opened raise a :class:`CacheError` instead of
    reaching a gradient or a metric; ``verify=False`` skips the check (to measure what it costs)."""

    def __init__(self, folder: Path, tokens: Dataset, depth: int, rows: np.ndarray | None = None, verify: bool = True) -> None:
        self.folder, self.tokens, self.depth, self.verify = Path(folder), tokens, depth, verify
        meta = store.read_meta(self.folder)
        self.emb_dim, self.row_bytes = meta["emb_dim"], meta["row_bytes"]
        self.storage = next(dtype for dtype, (name, _) in STORAGE.items() if name == meta["storage"])
        index = store.load_index(self.folder, meta)
        self.index, self.digests = index[:, :3].astype(np.int64), index[:, 3]  # per example: shard, first row, rows; checksum
        self.files = [str(self.folder / shard["file"]) for shard in meta["shards"]]
        self.rows = np.arange(len(self.index)) if rows is None else rows
        self.bytes = sum(shard["bytes"] for shard in meta["shards"])
        self.built = False  # whether this run built it (else it was reused)
        self._fds: dict[tuple[int, int], int] = {}

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn get a copy: open descriptors stay with this process
        return {**self.__dict__, "_fds": {}}

    def release(self) -> None:
        """Give up this process's hold on the cache (see :func:`hf_spam.cache.store.hold`), so that it may be pruned."""
        store.release(self.folder.parent, self.folder.name)

    def __len__(self) -> int:
        return len(self.rows)

    def _fd(self, shard: int) -> int:
        # opened lazily, per process: DataLoader workers get their own descriptors
        key = (os.getpid(), shard)
        if key not in self._fds:
            self._fds[key] = os.open(self.files[shard], os.O_RDONLY)
        return self._fds[key]

    def hidden_states(self, example: int) -> torch.Tensor:
        shard, first, rows = (int(x) for x in self.index[example])
        raw = os.pread(self._fd(shard), rows * self.row_bytes, first * self.row_bytes)
        if self.verify and store.row_digest(raw) != int(self.digests[example]):
            raise CacheError(
                f"{self.folder}: the cached rows of example {example} no longer match their checksum (the files were changed "
                "after this run opened them). Run again: the next run checks the whole cache and rebuilds it."
            )
        hidden = torch.frombuffer(bytearray(raw), dtype=STORAGE[self.storage][1]).view(rows, self.emb_dim)
        return hidden.view(self.storage) if self.storage == torch.bfloat16 else hidden

    def __getitem__(self, index: int) -> dict:
        example = int(self.rows[index])
        row = self.tokens[example]
        return {
            "prefix_hidden_states": self.hidden_states(example),
            "prefix_depth": self.depth,
            "input_ids": row["input_ids"],  # also gives Trainer's length-grouped sampler its lengths
            "attention_mask": row.get("attention_mask") or [1] * len(row["input_ids"]),
            "labels": row["label"],
        }

    def select(self, indices) -> CachedPrefix:
        view = CachedPrefix.__new__(CachedPrefix)
        view.__dict__ = {**self.__dict__, "rows": self.rows[np.asarray(list(indices), dtype=np.int64)], "_fds": {}}
        return view


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


def collate_cached(features: list[dict], pad_token_id: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A batch of cached examples, right-padded, in the model's ``dtype``; pad hidden states are zeros
    (the attention mask hides them)."""
    input_ids, attention_mask = pad_ids(features, pad_token_id)
    hidden = torch.zeros(*input_ids.shape, features[0]["prefix_hidden_states"].shape[-1], dtype=dtype)
    for row, feature in enumerate(features):
        hidden[row, : len(feature["input_ids"])] = feature["prefix_hidden_states"]
    return {
        "prefix_hidden_states": hidden,
        "prefix_depth": features[0]["prefix_depth"],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor([f["labels"] for f in features]),
    }
