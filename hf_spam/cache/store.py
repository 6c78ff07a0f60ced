"""The prefix cache on disk: its folder layout, checksums, locks and what makes a folder complete.

One folder per key under the cache root (``--prefix_cache_dir``), holding per process shard a
``shard-R-of-W.bin`` of raw rows, its ``shard-R-of-W.index.npy`` (per example: example, first row,
rows, xxh3-64 of its rows' bytes) and one ``meta.json`` (written last, with an xxh3 of its own content
and of every index file). A folder is complete when ``meta.json`` checks, every index file has its
recorded checksum and every ``.bin`` its recorded size; with ``verify`` every stored row is also read
and checked against its checksum, and readers check each row again as they read it. So a flipped
byte anywhere is found before it reaches a gradient or a metric.

Each key has a reader-writer lock (``.locks/<key>.db``, ``filelock.ReadWriteLock``; the operating
system releases it when its process dies). A run holds it shared for as long as it uses the key, so
pruning never removes a cache in use; a build holds it exclusively in ``<key>.partial``, published by a
rename: two runs that need the same key at once (a sweep) build it once, the second waits and reuses it.
A failed build removes its partial folder; a partial folder whose lock nobody holds was abandoned by a
killed run and is removed by the next build (or by :func:`prune_caches`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xxhash
from datasets import config as datasets_config
from filelock import ReadWriteLock, Timeout

from ..errors import CacheError

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
INDEX_COLUMNS = 4  # example, first row, rows, xxh3-64 of the rows' bytes
READ_CHUNK = 64 << 20  # bytes read at a time when verifying a whole shard
OPTION = "--prefix_cache_dir"
LOCKS = ".locks"  # one lock per key: shared while a run uses the key, exclusive while one builds or removes it
LAST_USED = "last_used"  # its mtime: the last build or reuse


class Damaged(Exception):
    """A cache folder that must not be read; the message says why."""


def default_cache_dir() -> Path:
    """Beside the datasets cache (``HF_DATASETS_CACHE``), not in a run's output folder: caches outlive runs."""
    return Path(datasets_config.HF_DATASETS_CACHE) / "hf_spam_prefix_cache"


def row_digest(raw: bytes | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(raw)


def _meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True).encode())


def write_index(path: Path, index: np.ndarray) -> str:
    """Save one shard's index (uint64, ``INDEX_COLUMNS`` per example) and return its file's xxh3-128."""
    np.save(path, index.astype(np.uint64))
    return xxhash.xxh3_128_hexdigest(path.read_bytes())


def write_meta(folder: Path, meta: dict) -> None:
    """``meta.json`` with a checksum of its own content (a flipped digit in a size would otherwise pass)."""
    (folder / "meta.json").write_text(
        json.dumps({**meta, "format": CACHE_FORMAT, "checksum": _meta_digest(meta | {"format": CACHE_FORMAT})})
    )


def read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as error:
        raise Damaged(f"meta.json is missing or unreadable ({type(error).__name__})") from error
    if not isinstance(meta, dict):
        raise Damaged("meta.json is not a cache description")
    if meta.get("format") != CACHE_FORMAT:  # an older hf_spam's cache (format 1 had no checksums): never used again, prunable
        raise Damaged(f"it has cache format {meta.get('format', 1)}, this version reads {CACHE_FORMAT}")
    if meta.get("checksum") != _meta_digest(meta):
        raise Damaged("meta.json does not match its checksum")
    return meta


def load_index(folder: Path, meta: dict) -> np.ndarray:
    """The whole cache's index, (examples, 4) uint64 (shard, first row, rows, digest of the rows), each
    shard's index checked against its recorded checksum and its rows against the shard's size."""
    row_bytes = meta["row_bytes"]
    index = np.zeros((meta["examples"], INDEX_COLUMNS), dtype=np.uint64)  # the shard, then the index file's columns 1-3
    seen = np.zeros(meta["examples"], dtype=bool)
    for number, shard in enumerate(meta["shards"]):
        path, data = folder / shard["index"], folder / shard["file"]
        try:
            raw = path.read_bytes()
            size = data.stat().st_size
        except OSError as error:
            raise Damaged(f"{error.filename} is missing or unreadable") from error
        if xxhash.xxh3_128_hexdigest(raw) != shard["index_xxh3"]:
            raise Damaged(f"{shard['index']} does not match its checksum")
        if size != shard["bytes"]:
            raise Damaged(f"{shard['file']} has the wrong size ({size} bytes, {shard['bytes']} were written)")
        part = np.load(path)
        if part.ndim != 2 or part.shape[1] != INDEX_COLUMNS or (part[:, 1] + part[:, 2]).max(initial=0) * row_bytes > size:
            raise Damaged(f"{shard['index']} does not describe {shard['file']}")
        examples = part[:, 0].astype(np.int64)
        seen[examples] = True
        index[examples, 0] = number
        index[examples, 1:] = part[:, 1:]
    if not seen.all():
        raise Damaged(f"{int((~seen).sum())} examples have no rows")
    return index


def verify_rows(folder: Path, meta: dict, index: np.ndarray) -> None:
    """Read every stored row once and check it against its checksum (shard by shard, in file order)."""
    row_bytes = meta["row_bytes"]
    for number, shard in enumerate(meta["shards"]):
        mine = index[index[:, 0] == number]
        stored = mine[np.unique(mine[:, 1], return_index=True)[1]]  # duplicates share their first copy's rows
        with open(folder / shard["file"], "rb", buffering=READ_CHUNK) as handle:
            position = 0
            for _, first, rows, digest in stored:
                if int(first) != position:
                    handle.seek(int(first) * row_bytes)
                raw = handle.read(int(rows) * row_bytes)
                position = int(first) + int(rows)
                if row_digest(raw) != int(digest):
                    raise Damaged(f"{shard['file']} rows {int(first)}-{position - 1} do not match their checksum")


def problem(folder: Path, key: str, verify: bool = True) -> str | None:
    """Why ``folder`` is not a complete, intact cache for ``key`` (``None``: it is)."""
    if not folder.is_dir():
        return "absent"
    try:
        meta = read_meta(folder)
        if meta.get("key") != key:
            return "it was built for other inputs"
        index = load_index(folder, meta)
        if verify:
            verify_rows(folder, meta, index)
    except Damaged as damage:
        return str(damage)
    return None


def usable_root(root: Path) -> Path:
    """``root`` created if needed, or a :class:`CacheError` naming it and the option (a file, read-only, no permission)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / LOCKS).mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=root / LOCKS):  # a name of its own: runs starting together each probe theirs
            pass
    except OSError as error:
        raise CacheError(
            f"The prefix cache folder {root} cannot be written ({error.strerror or error}). "
            f"Pass {OPTION} with a writable folder, or --prefix_cache false to train without the cache."
        ) from error
    return root


def _lock(root: Path, key: str) -> ReadWriteLock:
    return ReadWriteLock(str(root / LOCKS / f"{key}.db"), is_singleton=False)


# This process's shared holds, one per key, whichever splits or objects use it; released at exit (or by release()).
_HELD: dict[tuple[str, str], ReadWriteLock] = {}


def _ident(root: Path, key: str) -> tuple[str, str]:
    return os.path.abspath(root), key


@contextlib.contextmanager
def build_lock(root: Path, key: str) -> Iterator[None]:
    """Hold ``key``'s lock exclusively (to build or rebuild it); waits, saying so, while another process
    builds it or still reads a damaged copy. This process's own hold on it is given up first."""
    release(root, key)
    lock = _lock(root, key)
    try:
        lock.acquire_write(timeout=0, blocking=False)
    except Timeout:
        logger.warning("Another run is building or using the prefix cache %s; waiting for it, then reusing it.", root / key)
        lock.acquire_write()
    try:
        yield
    finally:
        lock.release()


def hold(root: Path, key: str, announce: bool = True) -> bool:
    """Take this process's shared hold on ``key`` (kept until the process ends or :func:`release`), so that
    pruning skips a cache in use; whether it had to wait for a build of that key to end. No hold where the
    root takes no lock file (a read-only cache)."""
    if _ident(root, key) in _HELD:
        return False
    try:
        (root / LOCKS).mkdir(parents=True, exist_ok=True)
        lock = _lock(root, key)
        try:
            lock.acquire_read(timeout=0, blocking=False)
            waited = False
        except Timeout:
            if announce:
                logger.warning("Another run is building the prefix cache %s; waiting for it, then reusing it.", root / key)
            lock.acquire_read()
            waited = True
    except (OSError, sqlite3.Error) as error:
        logger.debug("No hold on %s: %s", root / key, error)
        return False
    _HELD[_ident(root, key)] = lock
    return waited


def release(root: Path, key: str) -> None:
    """Give up this process's hold on ``key`` (a notebook done with a cache, so that it may be pruned)."""
    lock = _HELD.pop(_ident(root, key), None)
    if lock is not None:
        lock.release()


def in_use(root: Path, key: str) -> bool:
    """Whether a live process holds ``key`` (reading it, building it or removing it)."""
    if not (root / LOCKS / f"{key}.db").exists():
        return False
    with exclusively(root, key) as free:
        return not free


@contextlib.contextmanager
def exclusively(root: Path, key: str) -> Iterator[bool]:
    """Hold ``key`` exclusively for the block if no live process holds it; yields whether it could."""
    lock = _lock(root, key)
    try:
        lock.acquire_write(timeout=0, blocking=False)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def touch(folder: Path) -> None:
    """Record a use of the cache in ``folder`` (the mtime of ``last_used``; a read-only cache keeps its old one)."""
    with contextlib.suppress(OSError):
        (folder / LAST_USED).touch()


def remove_abandoned_partials(root: Path, grace: float = 0.0) -> None:
    """Remove ``*.partial`` folders whose lock nobody holds (and untouched for ``grace`` seconds): left by a
    run that was killed while building."""
    for partial in root.glob("*.partial"):
        key = partial.name.removesuffix(".partial")
        if partial.is_dir() and not in_use(root, key) and time.time() - partial.stat().st_mtime >= grace:
            shutil.rmtree(partial, ignore_errors=True)
            logger.warning("Removed %s, left by a run that stopped while building it.", partial)


def check_free_space(folder: Path, needed: int) -> None:
    """A :class:`CacheError` before anything is computed when the disk cannot hold ``needed`` bytes."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise CacheError(
            f"The prefix cache needs {needed / 2**20:,.1f} MiB in {folder.parent}, which has {free / 2**20:,.1f} MiB free. "
            f"Free space there, pass {OPTION} on a disk with room, or --prefix_cache false."
        )


def write_failed(partial: Path, error: OSError) -> CacheError:
    """The error for a build that could not write (the partial folder is removed first)."""
    shutil.rmtree(partial, ignore_errors=True)
    full = error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    advice = "Free space on that disk, or pass" if full else "Pass"
    return CacheError(
        f"Writing the prefix cache in {partial} failed ({error.strerror or error}); the partial cache was removed. "
        f"{advice} {OPTION} with another folder, or --prefix_cache false."
    )
