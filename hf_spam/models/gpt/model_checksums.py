"""The one integrity mechanism of hf_spam: a manifest of a folder's files (size, xxh3-128, CRC-32), written last
through an atomic rename and checked before anything in the folder is trusted. Model folders carry it as
``model_checksums.json`` (written by ``save_pretrained``, rewritten when a tokenizer is saved beside the model),
exports as the same file, and checkpoints as ``hf_spam_checkpoint.json`` with their run's identity beside it.

safetensors checks a file's header, not its data: bytes damaged on a disk or in a partial copy load
without complaint and the model computes NaN or quietly wrong numbers. ``config.json`` is covered because
an edited size (``n_heads`` 2 -> 4 keeps every tensor's shape) loads silently too, and the tokenizer files
because another vocabulary gives valid-looking ids. The manifest carries a checksum of its own entries, so
an entry deleted from it is a damaged manifest, not a file that goes unchecked; and a folder of this model
without a manifest is refused where it is loaded (``verify_checksums=False`` loads it unchecked).

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
# what every save lists, whatever else the folder holds
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")
# what a loaded model is computed from: its weights (one file or shards and their index), its config and its tokenizer
CHECKED_SUFFIXES = (".safetensors", ".safetensors.index.json")
CHECKED_NAMES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


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


def atomic_write_text(path: str | Path, text: str) -> None:
    """``path`` holds ``text`` whole or keeps what it held: written beside it, then renamed over it."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def _entries_checksum(files: dict) -> str:
    return f"{zlib.crc32(json.dumps(files, sort_keys=True).encode()):08x}"


def write_checksums(
    folder: str | Path, names: list[str] | None = None, *, manifest: str = CHECKSUMS_NAME, extra: dict | None = None
) -> None:
    """The manifest ``manifest`` (default ``model_checksums.json``) for the files just saved in ``folder``, written last
    (replacing any older one), over ``names`` (default: the weights, config and tokenizer, :func:`checked_files`), with
    ``extra`` fields beside them (a checkpoint's run identity)."""
    folder = Path(folder)
    algorithms = ("xxh3_128", "crc32") if xxhash is not None else ("crc32",)
    files = {name: file_checksums(folder / name, algorithms) for name in (checked_files(folder) if names is None else names)}
    body = {"files": files, "files_checksum": _entries_checksum(files), **(extra or {})}
    atomic_write_text(folder / manifest, json.dumps(body, indent=1) + "\n")


def read_manifest(path: str | Path) -> dict | None:
    """A manifest's content, ``None`` when it is absent or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def checksum_problem(manifest_path: str | Path, locate, required: tuple[str, ...] = ()) -> str | None:
    """Why the files differ from the manifest at ``manifest_path`` (``None``: they match). ``locate(name)`` gives
    a file's local path (in the folder, or in the Hub cache), or ``None`` when it is absent. Each of ``required`` that
    is there must be listed: a manifest written before it carried its own checksum can still not lose an entry."""
    name_of = Path(manifest_path).name
    manifest = read_manifest(manifest_path)
    try:
        files = manifest["files"]
        recorded_items = [(name, dict(recorded)) for name, recorded in files.items()]
    except (KeyError, TypeError, ValueError, AttributeError):
        return f"{name_of} is unreadable"
    if "files_checksum" in manifest and manifest["files_checksum"] != _entries_checksum(files):
        return f"{name_of} was edited after it was saved (its entries do not match their own checksum)"
    unlisted = [name for name in required if name not in files and locate(name) is not None]
    if unlisted:
        return f"{unlisted[0]} is not in {name_of} (an entry was removed, or the file was added after the save)"
    for name, recorded in recorded_items:
        path = locate(name)
        if path is None:
            return f"{name} is missing"
        size = Path(path).stat().st_size
        if size != recorded.get("bytes"):
            return f"{name} has {size} bytes, {recorded.get('bytes')} were saved (truncated or replaced)"
        algorithm = "xxh3_128" if xxhash is not None and "xxh3_128" in recorded else "crc32"
        if algorithm not in recorded:
            return f"{name_of} has no {algorithm} checksum for {name}"
        if file_checksums(Path(path), (algorithm,))[algorithm] != recorded[algorithm]:
            return f"{name} does not match its checksum in {name_of} (damaged or edited after it was saved)"
    return None
