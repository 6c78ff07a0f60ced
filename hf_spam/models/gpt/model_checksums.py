"""Checksums of a saved model's files, written by ``save_pretrained`` and checked by ``from_pretrained``.

safetensors checks a file's header, not its data: bytes damaged on a disk or in a partial copy load
without complaint and the model computes NaN or quietly wrong numbers. So saving writes
``model_checksums.json`` beside the weights (each weight file's and ``config.json``'s size, xxh3-128 and
CRC-32), and loading compares the files with it before the model is handed back. ``config.json`` is
covered because an edited size (``n_heads`` 2 -> 4 keeps every tensor's shape) loads silently too.

``modeling_gpt`` imports this file through ``from .model_checksums import ...``, so it is copied next to
every saved model: standard library only. xxhash (an hf_spam dependency) is used when installed, which
is 3-4x faster than CRC-32; where the remote code runs without it, CRC-32 (``zlib``) checks the same files.
"""

from __future__ import annotations

import json
import mmap
import zlib
from pathlib import Path

try:  # optional: transformers' import check skips imports inside try blocks
    import xxhash
except ImportError:
    xxhash = None

CHECKSUMS_NAME = "model_checksums.json"
# what a loaded model is computed from: its weights (one file or shards and their index) and its config
CHECKED_SUFFIXES = (".safetensors", ".safetensors.index.json")
CHECKED_NAMES = ("config.json",)


class ModelFilesError(OSError):
    """A saved model's files are not the ones saved, or do not fit its config: the message names the folder and file."""


def file_checksums(path: Path, algorithms: tuple[str, ...] = ("xxh3_128", "crc32")) -> dict:
    """``{"bytes": size, <algorithm>: hex digest, ...}`` of one file, read through ``mmap`` (no copy)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""  # mmap refuses length 0
        try:
            return {"bytes": size} | {algorithm: _digest(data, algorithm) for algorithm in algorithms}
        finally:
            if size:
                data.close()


def _digest(data, algorithm: str) -> str:
    return xxhash.xxh3_128(data).hexdigest() if algorithm == "xxh3_128" else f"{zlib.crc32(data):08x}"


def checked_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and (p.name.endswith(CHECKED_SUFFIXES) or p.name in CHECKED_NAMES))


def write_checksums(folder: str | Path, names: list[str] | None = None) -> None:
    """``model_checksums.json`` for the model just saved in ``folder`` (written last, replacing any older one), over
    ``names`` (default: the weights and config, :func:`checked_files`)."""
    folder = Path(folder)
    algorithms = ("xxh3_128", "crc32") if xxhash is not None else ("crc32",)
    files = {name: file_checksums(folder / name, algorithms) for name in (checked_files(folder) if names is None else names)}
    partial = folder / f"{CHECKSUMS_NAME}.partial"
    partial.write_text(json.dumps({"files": files}, indent=1) + "\n")
    partial.replace(folder / CHECKSUMS_NAME)


def checksum_problem(manifest_path: str | Path, locate) -> str | None:
    """Why the files differ from the manifest at ``manifest_path`` (``None``: they match). ``locate(name)`` gives
    a file's local path (in the folder, or in the Hub cache), or ``None`` when it is absent."""
    try:
        files = json.loads(Path(manifest_path).read_text())["files"]
        recorded_items = [(name, dict(recorded)) for name, recorded in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{CHECKSUMS_NAME} is unreadable"
    for name, recorded in recorded_items:
        path = locate(name)
        if path is None:
            return f"{name} is missing"
        size = Path(path).stat().st_size
        if size != recorded.get("bytes"):
            return f"{name} has {size} bytes, {recorded.get('bytes')} were saved (truncated or replaced)"
        algorithm = "xxh3_128" if xxhash is not None and "xxh3_128" in recorded else "crc32"
        if algorithm not in recorded:
            return f"{CHECKSUMS_NAME} has no {algorithm} checksum for {name}"
        if file_checksums(Path(path), (algorithm,))[algorithm] != recorded[algorithm]:
            return f"{name} does not match its checksum in {CHECKSUMS_NAME} (damaged or edited after it was saved)"
    return None
