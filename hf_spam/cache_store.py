"""The frozen-prefix cache on disk: its folder layout, checksums, locks and what makes a folder complete.

One folder per key under the cache root (``--trunk_cache_dir``), holding per process shard a
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
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xxhash
from datasets import config as datasets_config
from filelock import ReadWriteLock, Timeout

from .errors import CacheError

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
INDEX_COLUMNS = 4  # example, first row, rows, xxh3-64 of the rows' bytes
READ_CHUNK = 64 << 20  # bytes read at a time when verifying a whole shard
OPTION = "--trunk_cache_dir"
LOCKS = ".locks"  # one lock per key: shared while a run uses the key, exclusive while one builds or removes it
LAST_USED = "last_used"  # its mtime: the last build or reuse


class Damaged(Exception):
    """A cache folder that must not be read; the message says why."""


def default_cache_dir() -> Path:
    """Beside the datasets cache (``HF_DATASETS_CACHE``), not in a run's output folder: caches outlive runs."""
    return Path(datasets_config.HF_DATASETS_CACHE) / "hf_spam_trunk"


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
    (folder / "meta.json").write_text(json.dumps({**meta, "format": CACHE_FORMAT, "checksum": _meta_digest(meta | {"format": CACHE_FORMAT})}))


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
        probe = root / LOCKS / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise CacheError(
            f"The frozen-prefix cache folder {root} cannot be written ({error.strerror or error}). "
            f"Pass {OPTION} with a writable folder, or --cache_frozen_trunk false to train without the cache."
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
        logger.warning("Another run is building or using the frozen-prefix cache %s; waiting for it, then reusing it.", root / key)
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
                logger.warning("Another run is building the frozen-prefix cache %s; waiting for it, then reusing it.", root / key)
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
    with _exclusively(root, key) as free:
        return not free


@contextlib.contextmanager
def _exclusively(root: Path, key: str) -> Iterator[bool]:
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
            f"The frozen-prefix cache needs {needed / 2**20:,.1f} MiB in {folder.parent}, which has {free / 2**20:,.1f} MiB free. "
            f"Free space there, pass {OPTION} on a disk with room, or --cache_frozen_trunk false."
        )


def write_failed(partial: Path, error: OSError) -> CacheError:
    """The error for a build that could not write (the partial folder is removed first)."""
    shutil.rmtree(partial, ignore_errors=True)
    full = error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    advice = "Free space on that disk, or pass" if full else "Pass"
    return CacheError(
        f"Writing the frozen-prefix cache in {partial} failed ({error.strerror or error}); the partial cache was removed. "
        f"{advice} {OPTION} with another folder, or --cache_frozen_trunk false."
    )


# ---------------------------------------------------------------------------------------------
# Managing the cache: list, prune, and room for a new key under a size limit


@dataclass
class CacheEntry:
    """One key (or an unfinished ``.partial`` build) in a cache root, as :func:`list_caches` found it."""

    key: str
    folder: Path
    bytes: int
    status: str  # complete | damaged: <why> | building | abandoned
    in_use: bool
    examples: int | None = None
    model: str | None = None
    depth: int | None = None
    data: str | None = None
    split: str | None = None
    dtype: str | None = None
    created: float | None = None
    last_used: float | None = None

    def as_json(self) -> dict:
        return {**asdict(self), "folder": str(self.folder)}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _entry(root: Path, folder: Path) -> CacheEntry:
    key = folder.name.removesuffix(".partial")
    busy = in_use(root, key)
    if folder.name.endswith(".partial"):
        return CacheEntry(key, folder, _folder_bytes(folder), "building" if busy else "abandoned", busy, last_used=folder.stat().st_mtime)
    why = problem(folder, key, verify=False)
    entry = CacheEntry(key, folder, _folder_bytes(folder), "complete" if why is None else f"damaged: {why}", busy)
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        meta = json.loads((folder / "meta.json").read_text())
        source = meta.get("provenance", {})
        entry.examples, entry.dtype, entry.created = meta.get("examples"), meta.get("storage"), meta.get("created")
        entry.model, entry.depth, entry.data, entry.split = (source.get(k) for k in ("model", "depth", "data", "split"))
    used = folder / LAST_USED
    entry.last_used = (used if used.exists() else folder).stat().st_mtime
    return entry


def _is_cache_root(root: Path) -> bool:
    """Only what a cache root holds: 40-hex key folders, their ``.partial`` builds, ``.locks``."""
    for path in root.iterdir():
        name = path.name.removesuffix(".partial")
        if path.name != LOCKS and not (path.is_dir() and len(name) == 40 and all(c in "0123456789abcdef" for c in name)):
            return False
    return True


def list_caches(root: str | Path | None = None) -> list[CacheEntry]:
    """Every key under ``root`` (default: :func:`default_cache_dir`), least recently used first."""
    root = Path(root) if root is not None else default_cache_dir()
    if not root.exists():
        return []
    if not root.is_dir() or not _is_cache_root(root):
        raise CacheError(
            f"{root} is not a frozen-prefix cache folder (it holds {', '.join(sorted(p.name for p in root.iterdir())[:5]) if root.is_dir() else 'a file'}). "
            f"Pass {OPTION} with the folder training used (default: {default_cache_dir()})."
        )
    entries = [_entry(root, folder) for folder in root.iterdir() if folder.name != LOCKS]
    return sorted(entries, key=lambda e: e.last_used or 0.0)


def remove(root: Path, entry: CacheEntry) -> bool:
    """Remove one key (or partial build) unless a live process holds it; whether it was removed."""
    with _exclusively(root, entry.key) as free:
        if free:
            shutil.rmtree(entry.folder, ignore_errors=True)
        return free


@dataclass
class PruneResult:
    removed: list[CacheEntry] = field(default_factory=list)
    skipped: list[tuple[CacheEntry, str]] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(e.bytes for e in self.removed)


def prune_caches(
    root: str | Path | None = None,
    *,
    older_than: float | None = None,
    max_size: int | None = None,
    keep: int | None = None,
    dry_run: bool = False,
    partial_grace: float = 3600.0,
    now: float | None = None,
) -> PruneResult:
    """Remove whole keys, least recently used first: those last used more than ``older_than`` seconds ago,
    those beyond the ``keep`` most recently used, then more until the rest fits in ``max_size`` bytes; also
    damaged keys, and ``.partial`` builds nobody holds that are older than ``partial_grace`` seconds. A key a
    live process holds (a run reading it, a build) is skipped with the reason. ``dry_run`` removes nothing."""
    root = Path(root) if root is not None else default_cache_dir()
    now = time.time() if now is None else now
    entries = list_caches(root)
    keys = [e for e in entries if e.status in ("complete",) or e.status.startswith("damaged")]
    newest_first = sorted((e for e in keys if e.status == "complete"), key=lambda e: e.last_used or 0.0, reverse=True)
    doomed: dict[str, tuple[CacheEntry, str]] = {}
    for entry in keys:
        if entry.status.startswith("damaged"):
            doomed[entry.key] = (entry, entry.status)
        elif older_than is not None and now - (entry.last_used or 0.0) > older_than:
            doomed[entry.key] = (entry, "older than the limit")
    if keep is not None:
        for entry in newest_first[keep:]:
            doomed.setdefault(entry.key, (entry, f"beyond the {keep} most recently used"))
    if max_size is not None:
        total = sum(e.bytes for e in keys if e.key not in doomed)
        for entry in reversed(newest_first):  # least recently used first
            if total <= max_size:
                break
            if entry.key not in doomed:
                doomed[entry.key] = (entry, "over the size limit")
                total -= 0 if entry.in_use else entry.bytes  # one in use stays (skipped below, with the reason)
    for entry in entries:
        if entry.status in ("abandoned", "building") and now - (entry.last_used or 0.0) >= partial_grace:
            doomed[entry.folder.name] = (entry, "an abandoned build")
    result = PruneResult()
    for entry, _ in sorted(doomed.values(), key=lambda pair: pair[0].last_used or 0.0):
        if entry.in_use:
            result.skipped.append((entry, "in use by a running process"))
        elif dry_run or remove(root, entry):
            result.removed.append(entry)
        else:
            result.skipped.append((entry, "taken by a process that started meanwhile"))
    return result


def make_room(root: Path, key: str, needed: int, max_size: int) -> None:
    """Before building ``key`` (``needed`` bytes) under a ``max_size`` limit: evict least recently used
    complete keys that no process holds until it fits, a log line each; else a :class:`CacheError`, before
    anything is computed."""
    if needed > max_size:
        raise CacheError(
            f"The frozen-prefix cache {root / key} needs {format_size(needed)}, more than --trunk_cache_max_size "
            f"{format_size(max_size)} allows on its own. Raise the limit, or pass --cache_frozen_trunk false."
        )
    others = [e for e in list_caches(root) if e.key != key and not e.status.endswith(("building", "abandoned"))]
    total = sum(e.bytes for e in others)
    for entry in others:  # least recently used first
        if total + needed <= max_size:
            break
        if not entry.in_use and remove(root, entry):
            total -= entry.bytes
            logger.warning(
                "Evicted the frozen-prefix cache %s (%s, last used %s) to keep %s under --trunk_cache_max_size %s.",
                entry.folder, format_size(entry.bytes), format_time(entry.last_used), root, format_size(max_size),
            )
    if total + needed > max_size:
        raise CacheError(
            f"The frozen-prefix cache {root / key} needs {format_size(needed)}, and the keys in use by running processes "
            f"leave only {format_size(max(max_size - total, 0))} of --trunk_cache_max_size {format_size(max_size)}. "
            "Raise the limit, wait for those runs, or pass another --trunk_cache_dir."
        )


UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str, option: str = "--max-size") -> int:
    """``20GB``, ``500MB``, ``1.5GiB``, ``1000`` (bytes) -> bytes; anything else an error naming ``option``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in UNITS:
        raise CacheError(f"{option} {text!r}: give a size such as 20GB, 500MB or 1.5GiB (units: {', '.join(u.upper() for u in UNITS if u)}).")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def parse_age(text: str, option: str = "--older-than") -> float:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w`` -> seconds; anything else an error naming ``option``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text))
    if not match:
        raise CacheError(f"{option} {text!r}: give an age such as 7d, 12h, 30m, 90s or 2w.")
    return float(match.group(1)) * AGES[match.group(2)]


def format_size(size: int) -> str:
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def format_time(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"
