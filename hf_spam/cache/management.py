"""Managing the prefix cache: list its keys, prune them (by age, count or size), and make room for a new key
under ``--prefix_cache_max_size``; sizes and ages as users write them. ``hf-spam cache`` is its command line.

Nothing here removes a key a live process holds: every removal takes the key's lock exclusively first
(see :mod:`hf_spam.cache.store`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CacheError
from .store import LAST_USED, LOCKS, OPTION, default_cache_dir, exclusively, in_use, problem

logger = logging.getLogger(__name__)


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
            f"{root} is not a prefix cache folder (it holds "
            f"{', '.join(sorted(p.name for p in root.iterdir())[:5]) if root.is_dir() else 'a file'}). "
            f"Pass {OPTION} with the folder training used (default: {default_cache_dir()})."
        )
    entries = [_entry(root, folder) for folder in root.iterdir() if folder.name != LOCKS]
    return sorted(entries, key=lambda e: e.last_used or 0.0)


def remove(root: Path, entry: CacheEntry) -> bool:
    """Remove one key (or partial build) unless a live process holds it; whether it was removed."""
    with exclusively(root, entry.key) as free:
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
            f"The prefix cache {root / key} needs {format_size(needed)}, more than --prefix_cache_max_size "
            f"{format_size(max_size)} allows on its own. Raise the limit, or pass --prefix_cache false."
        )
    others = [e for e in list_caches(root) if e.key != key and not e.status.endswith(("building", "abandoned"))]
    total = sum(e.bytes for e in others)
    for entry in others:  # least recently used first
        if total + needed <= max_size:
            break
        if not entry.in_use and remove(root, entry):
            total -= entry.bytes
            logger.warning(
                "Evicted the prefix cache %s (%s, last used %s) to keep %s under --prefix_cache_max_size %s.",
                entry.folder,
                format_size(entry.bytes),
                format_time(entry.last_used),
                root,
                format_size(max_size),
            )
    if total + needed > max_size:
        raise CacheError(
            f"The prefix cache {root / key} needs {format_size(needed)}, and the keys in use by running processes "
            f"leave only {format_size(max(max_size - total, 0))} of --prefix_cache_max_size {format_size(max_size)}. "
            "Raise the limit, wait for those runs, or pass another --prefix_cache_dir."
        )


UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str, option: str = "--max_size") -> int:
    """``20GB``, ``500MB``, ``1.5GiB``, ``1000`` (bytes) -> bytes; anything else an error naming ``option``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in UNITS:
        raise CacheError(
            f"{option} {text!r}: give a size such as 20GB, 500MB or 1.5GiB (units: {', '.join(u.upper() for u in UNITS if u)})."
        )
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def parse_age(text: str, option: str = "--older_than") -> float:
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
