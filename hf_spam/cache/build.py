"""Train only what trains: run the frozen part of the classifier once, keep its output on disk, train the top on it.

Chapter 6 freezes everything below the last block. With no dropout in that frozen prefix its output
is a fixed function of the input, so computing it every step of every epoch (as the book and a
plain ``Trainer`` do) repeats the same work five times. Here the prefix runs once per example under
``inference_mode`` and its hidden states are written to disk; training and evaluation then read them
back per batch and feed them to the classifier's own ``forward(prefix_hidden_states=...,
prefix_depth=...)``, which runs only blocks ``[depth:]``, ``final_norm`` and the head. ``Trainer``
always holds the real classifier: its checkpoints are complete models, and a run can resume a
checkpoint of an uncached run and vice versa. The result is the same computation (a test checks
loss and gradients against the uncached model on the same batch); only the order of floating-point
work differs.

The cache, and why it is built this way:

- **Raw rows in flat files, read with ``os.pread``**, one ``(tokens, emb_dim)`` block per example.
  Reads are explicit, per example, so neither the resident memory nor the address space grows with
  the cache (a memory map would reserve the whole file; Arrow via ``datasets.map`` would fingerprint
  by hashing the model through ``dill`` and turn each row into nested lists). The operating system's
  page cache still keeps hot files in RAM when there is room.
- **Keyed by what it depends on**: a sha256 over the model's whole config (less the fields only the
  head reads), the frozen tensors (embeddings and blocks ``[0, depth)``), the depth, whether the blocks
  read the attention mask, the storage dtype, and the split's token ids and masks. Any change gives a
  new cache, never a stale one; an unchanged run (another learning rate, another seed) reuses it.
- **Never half-read, never read damaged, never built twice at once**: see :mod:`hf_spam.cache.store`
  (checksums per example's rows, a lock per key, a build folder published by a rename).
- **Duplicates computed once**: examples with the same token ids and mask share their rows.
- **Sharded across processes**: under ``torchrun``/``accelerate launch`` each process computes the
  examples ``i % world_size == rank`` into its own shard, then all wait; every process reads all shards.
- ``dtype=torch.bfloat16`` halves the disk size (rows are stored as bf16 and widened on read);
  the default is the model's own dtype, which is exact. ``autocast=torch.bfloat16`` (what ``--bf16``
  passes) runs the prefix's matrix products in bf16 as Trainer's autocast runs the rest, and stores bf16.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from ..errors import CacheError
from ..models.gpt.modeling_gpt import GPTForSequenceClassification
from ..models.gpt.pooled_position import blocks_mask, prefix
from . import store
from .keys import first_copies, model_fingerprint, tensor_bytes, token_lengths, tokens_fingerprint
from .management import format_size, make_room
from .rows import STORAGE, CachedPrefix, collate_cached, pad_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefixCacheOptions:
    """How a prefix cache is kept and built, passed down whole (``SpamTrainingArguments.prefix_cache_options`` makes
    one from ``--prefix_cache_*``).

    ``cache_dir``: where caches live (default: :func:`~hf_spam.cache.store.default_cache_dir`). ``dtype``: the
    storage dtype (``bfloat16`` halves the size; default: the autocast dtype, else the model's own, exact).
    ``autocast``: the prefix runs under ``torch.autocast`` in this dtype, as Trainer's ``--bf16`` runs the rest; part
    of the key, as ``dtype`` is. ``batch_size``: examples per batch while building. ``verify``: a reused cache is read
    whole against its checksums before it is trusted, and each row is checked as it is read. ``provenance``
    (``model``, ``data``, ``split``): recorded for ``hf-spam cache list``. ``max_size`` (bytes): least recently used
    keys are evicted before a build so that the folder stays within it. ``progress``: a bar while a split builds.
    """

    cache_dir: str | os.PathLike | None = None
    dtype: torch.dtype | None = None
    autocast: torch.dtype | None = None
    batch_size: int = 32
    verify: bool = True
    provenance: Mapping[str, str] = field(default_factory=dict)
    max_size: int | None = None
    progress: bool = True

    def storage(self, model: GPTForSequenceClassification) -> torch.dtype:
        """The cache's storage dtype: as asked, else the autocast dtype, else the model's own (exact)."""
        return self.dtype or self.autocast or next(model.parameters()).dtype

    @property
    def root(self) -> Path:
        return Path(self.cache_dir or store.default_cache_dir())


class PreparedSplits(NamedTuple):
    """What :func:`prepare` gives Trainer: each split as its cached prefix, and the collator that batches them."""

    splits: dict[str, CachedPrefix]
    collator: Callable


def frozen_depth(model: GPTForSequenceClassification) -> int:
    """How many leading blocks can be cached: embeddings and blocks with no trainable parameter, no dropout.

    0 means nothing can be cached (trainable embeddings, dropout, or adapters everywhere).
    """
    gpt = model.model
    if model.config.drop_rate > 0 or any(p.requires_grad for p in (*gpt.tok_emb.parameters(), *gpt.pos_emb.parameters())):
        return 0
    depth = 0
    for block in gpt.trf_blocks:
        if any(p.requires_grad for p in block.parameters()):
            break
        depth += 1
    return depth


# ---------------------------------------------------------------------------------------------
# Building


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_batch_tokens: int):
    """Consecutive runs of ``order`` (sorted by length) of at most ``batch_size`` examples and
    ``max_batch_tokens`` padded tokens, so the prefix's activations stay bounded for long texts, and small:
    at 2,048 tokens a block's activations stay in the CPU's caches between its operations, which builds the
    SMS prefix faster than at 8,192 (BENCHMARKS.md)."""
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < batch_size and (end + 1 - start) * lengths[order[end]] <= max_batch_tokens:
            end += 1
        yield order[start:end]
        start = end


@contextlib.contextmanager
def _linears_cast(module: torch.nn.Module, dtype: torch.dtype | None):
    """The ``nn.Linear`` weights and biases of ``module`` held in ``dtype`` for the duration.

    Under autocast every matrix product casts its fp32 weight and bias to the autocast dtype again on
    each call (autocast keeps the casts of trainable tensors only), so running frozen blocks over many
    batches would repeat the copies; casting them once gives the same products, bit for bit.
    """
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)] if dtype is not None else []
    originals = [(m.weight.data, m.bias.data if m.bias is not None else None) for m in linears]
    try:
        for m in linears:
            m.weight.data = m.weight.data.to(dtype)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(dtype)
        yield
    finally:
        for m, (weight, bias) in zip(linears, originals, strict=True):
            m.weight.data = weight
            if bias is not None:
                m.bias.data = bias


@torch.inference_mode()
def _compute_shard(
    model: GPTForSequenceClassification,
    dataset: Dataset,
    depth: int,
    folder: Path,
    options: PrefixCacheOptions,
    rank: int,
    world: int,
    max_batch_tokens: int = 2048,
) -> dict:
    """Run embeddings + blocks ``[0, depth)`` over this process's share, in length-sorted batches, appending
    to its shard file; each example's rows get a checksum in the shard's index. Process 0 shows a progress bar
    (``options.progress``), as Trainer does for its loops: a build can take minutes."""
    lengths = token_lengths(dataset)
    mine = np.arange(len(dataset))[rank::world]
    copies = first_copies(dataset, mine)
    unique = mine[copies == mine]
    storage, autocast = options.storage(model), options.autocast
    row_bytes = _row_bytes(model.config.emb_dim, storage)
    store.check_free_space(folder, int(lengths[unique].sum()) * row_bytes)  # before computing anything
    order = unique[np.argsort(lengths[unique], kind="stable")]
    device = next(model.parameters()).device
    pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    name = f"shard-{rank}-of-{world}"
    first_row, digest = np.zeros(len(dataset), dtype=np.uint64), np.zeros(len(dataset), dtype=np.uint64)
    written = 0
    bar = tqdm(total=len(unique), desc="Prefix cache", unit="examples", disable=not options.progress or rank != 0)
    with bar, open(folder / f"{name}.bin", "wb") as out, _linears_cast(model.model.trf_blocks[:depth], autocast):
        for rows in _batches(order, lengths, options.batch_size, max_batch_tokens):
            bar.update(len(rows))
            batch = dataset.select(rows)
            masks = batch["attention_mask"] if "attention_mask" in batch.column_names else [[1] * len(i) for i in batch["input_ids"]]
            ids, mask = pad_ids(
                [{"input_ids": i, "attention_mask": m} for i, m in zip(batch["input_ids"], masks, strict=True)], pad_token_id
            )
            # most length-sorted batches have no padding: without a mask SDPA runs its causal kernel (same result)
            attention_mask = None if bool(mask.all()) else blocks_mask(model.config.pooling, mask.to(device))
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                hidden = prefix(model.model, ids.to(device), attention_mask, depth)
            hidden = hidden.to(storage).cpu()
            for offset, example in enumerate(rows):
                length = int(lengths[example])
                raw = tensor_bytes(hidden[offset, :length])
                out.write(raw)
                first_row[example], digest[example] = written, store.row_digest(raw)
                written += length
    # per example of this shard: (example, its first row, its rows, their checksum); duplicates point at their first copy's rows
    index = np.stack([mine.astype(np.uint64), first_row[copies], lengths[mine].astype(np.uint64), digest[copies]], axis=1)
    index_xxh3 = store.write_index(folder / f"{name}.index.npy", index)
    return {
        "file": f"{name}.bin",
        "index": f"{name}.index.npy",
        "index_xxh3": index_xxh3,
        "bytes": written * row_bytes,
        "examples": len(mine),
    }


def _row_bytes(emb_dim: int, storage: torch.dtype) -> int:
    """Bytes of one cached token: ``emb_dim`` values in the storage dtype."""
    return emb_dim * torch.empty(0, dtype=storage).element_size()


def _stored_bytes(dataset: Dataset, emb_dim: int, storage: torch.dtype) -> int:
    """What the split's cache takes on disk: one row per token of each distinct example."""
    examples = np.arange(len(dataset))
    distinct = examples[first_copies(dataset, examples) == examples]
    return int(token_lengths(dataset)[distinct].sum()) * _row_bytes(emb_dim, storage)


def open_prefix_cache(
    model: GPTForSequenceClassification, dataset: Dataset, depth: int, options: PrefixCacheOptions = PrefixCacheOptions()
) -> CachedPrefix:
    """The split's cached prefix: reused when a complete, intact cache for exactly these inputs exists, else
    built (by every process its share, under ``torchrun``/``accelerate launch``) and then opened."""
    return _open(model, dataset, depth, options, model_fingerprint(model, depth, options.storage(model), options.autocast))


def _agree(value):
    """Process 0's ``value`` on every process (itself when not distributed), so all take the same branch."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return value


def _open(model: GPTForSequenceClassification, dataset: Dataset, depth: int, options: PrefixCacheOptions, model_key: str) -> CachedPrefix:
    """:func:`open_prefix_cache` with the model's fingerprint already taken (one per model, not per split).

    Process 0 checks the folder and holds the key's build lock (another job building the same key is
    waited for, then its cache is reused); the other processes follow its decision."""
    key = hashlib.sha256((model_key + tokens_fingerprint(dataset)).encode()).hexdigest()[:40]
    root, verify = options.root, options.verify
    folder = root / key
    rank, world = _world()
    waited = store.hold(root, key) if rank == 0 else False  # shared, to the end of the run: pruning skips what a run uses
    if _agree(store.problem(folder, key, verify) if rank == 0 else None) is None:
        logger.info("Reusing the prefix cache %s%s (%d examples).", folder, ", built by another run meanwhile" * waited, len(dataset))
        return _opened(folder, dataset, depth, verify, built=False)
    if rank == 0:
        store.usable_root(root)
    with store.build_lock(root, key) if rank == 0 else contextlib.nullcontext():
        problem = _agree(store.problem(folder, key, verify) if rank == 0 else None)  # another job may have built it meanwhile
        if problem is None:
            logger.info("Reusing the prefix cache %s, built by another run meanwhile.", folder)
        else:
            _build(model, dataset, depth, key, options, problem)
        _barrier()
    if rank == 0:
        store.hold(root, key, announce=False)
    return _opened(folder, dataset, depth, verify, built=problem is not None)


def _opened(folder: Path, dataset: Dataset, depth: int, verify: bool, built: bool) -> CachedPrefix:
    """The split's cache, opened, with a note of this use."""
    store.touch(folder)
    cache = CachedPrefix(folder, dataset, depth, verify=verify)
    cache.built = built
    return cache


def _build(model: GPTForSequenceClassification, dataset: Dataset, depth: int, key: str, options: PrefixCacheOptions, problem: str) -> None:
    """Compute every process's shard into ``<key>.partial``, then publish it as ``<key>`` (process 0 holds the lock).

    A build that fails removes its partial folder; one that cannot write raises a :class:`CacheError` naming it."""
    root, storage = options.root, options.storage(model)
    folder, partial = root / key, root / f"{key}.partial"
    rank, world = _world()
    if rank == 0:
        if folder.exists():
            logger.warning("Rebuilding the prefix cache %s: %s.", folder, problem)
            shutil.rmtree(folder)
        logger.info("Building the prefix cache %s (%d examples, %d processes).", folder, len(dataset), world)
        shutil.rmtree(partial, ignore_errors=True)  # this key's, abandoned: the lock is ours
        store.remove_abandoned_partials(root)
        if options.max_size is not None:
            make_room(root, key, _stored_bytes(dataset, model.config.emb_dim, storage), options.max_size)
        partial.mkdir()
    _barrier()
    was_training = model.training
    model.eval()
    try:
        shard = _compute_shard(model, dataset, depth, partial, options, rank, world)
        (partial / f"shard-{rank}-of-{world}.json").write_text(json.dumps(shard))
        _barrier()
        if rank == 0:
            shards = [json.loads((partial / f"shard-{r}-of-{world}.json").read_text()) for r in range(world)]
            meta = {"key": key, "examples": len(dataset), "emb_dim": model.config.emb_dim, "created": time.time()}
            meta["row_bytes"] = _row_bytes(model.config.emb_dim, storage)
            meta |= {"provenance": {"depth": depth, **options.provenance}, "storage": STORAGE[storage][0], "shards": shards}
            store.write_meta(partial, meta)  # written last: its presence (and checksum) means complete
            partial.rename(folder)
    except OSError as error:
        raise store.write_failed(partial, error) from error
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        model.train(was_training)


def check_fits(splits: Mapping[str, Dataset], emb_dim: int, storage: torch.dtype, options: PrefixCacheOptions) -> None:
    """Every split's cache is in the folder at once while a run trains: splits that cannot fit together under
    ``options.max_size`` are an error before any of them is computed."""
    needed = {name: _stored_bytes(split, emb_dim, storage) for name, split in splits.items()}
    if sum(needed.values()) > options.max_size:
        shown = ", ".join(f"{name} {format_size(size)}" for name, size in needed.items())
        raise CacheError(
            f"The prefix caches of this run need {format_size(sum(needed.values()))} together ({shown}) in "
            f"{options.root}, more than --prefix_cache_max_size {format_size(options.max_size)}. Raise the limit, "
            "or pass --prefix_cache false."
        )


def prepare(
    model: GPTForSequenceClassification, splits: Mapping[str, Dataset], options: PrefixCacheOptions = PrefixCacheOptions()
) -> PreparedSplits | None:
    """Every split of ``splits`` (token ids, as ``TokenizedData.splits``) as its cached prefix, with their collator,
    built where no intact cache exists (the one step of a run that can take minutes, so a named call of its own);
    ``None`` when nothing can be cached exactly (see :func:`frozen_depth`). Each split's provenance is ``options``'
    with the split's name."""
    depth = frozen_depth(model) if isinstance(model, GPTForSequenceClassification) else 0
    if not depth:
        return None
    started = time.perf_counter()
    storage = options.storage(model)
    if options.max_size is not None:
        check_fits(splits, model.config.emb_dim, storage, options)
    model_key = model_fingerprint(model, depth, storage, options.autocast)
    cached = {
        name: _open(model, split, depth, replace(options, provenance={**options.provenance, "split": name}), model_key)
        for name, split in splits.items()
    }
    logger.info(
        "Frozen embeddings + %d blocks ready for %d examples in %.1f s (cache: %s).",
        depth,
        sum(map(len, cached.values())),
        time.perf_counter() - started,
        options.root,
    )
    return PreparedSplits(
        cached, functools.partial(collate_cached, pad_token_id=model.config.pad_token_id, dtype=next(model.parameters()).dtype)
    )
