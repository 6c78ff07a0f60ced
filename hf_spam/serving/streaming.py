"""Classifying a file of any size in bounded memory: texts are read and classified a chunk at a time (each chunk in
length-sorted batches, see ``predict_proba``), and the results come out in the input's order as they are ready."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from .classifier import classify, open_text_file, read_lines

# texts read and classified at once: enough for length-sorted batches to pad little, few enough to keep memory flat
CHUNK_SIZE = 4096


def classify_stream(
    classifier, texts: Iterable[str], batch_size: int = 32, threshold: float | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[dict]:
    """:func:`~hf_spam.serving.classifier.classify`'s results for ``texts`` (any iterable, read lazily), ``chunk_size`` texts at
    a time, in order."""
    iterator, start = iter(texts), 0
    while chunk := list(itertools.islice(iterator, chunk_size)):
        yield from classify(classifier, chunk, batch_size, threshold, first_index=start)
        start += len(chunk)


def read_file(path: str | os.PathLike, progress: bool | None = None) -> Iterator[str]:
    """The texts of a file, one per line (``read_lines``), read as they are needed, with a progress bar in bytes on
    stderr (``progress=None``: only when stderr is a terminal)."""
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    disable = None if progress is None else not progress
    with open_text_file(path) as handle, tqdm(total=size, unit="B", unit_scale=True, desc=Path(path).name, disable=disable) as bar:
        yield from read_lines(_counted(handle, bar), str(path))


def _counted(handle, bar) -> Iterator[bytes]:
    for line in handle:
        bar.update(len(line))
        yield line
