"""Reading the user's files and Hub datasets as they are: CSV/TSV/JSON(L)/Parquet, each split's encoding,
byte-order marks, headers, TSV quotes, and the line numbers the user's editor shows; Hub splits by name.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, Value, load_dataset

from ..errors import DataError

logger = logging.getLogger(__name__)


LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "test": "test",
}

QUOTINGS = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}  # CSV's double quotes, or quotes as ordinary text


@dataclass
class RawSplit:
    """One split as read, before renaming: the dataset plus how to name its rows in messages."""

    dataset: Dataset
    where: str  # "train.csv" or "imdb (test split)"
    row_names: list[str] | None = None  # per row, e.g. "line 7"; None: "row <index>"

    def row_name(self, index: int) -> str:
        return self.row_names[index] if self.row_names is not None else f"row {index}"


def read_splits(path_or_id, train_file, validation_file, test_file, config_name, splits, text_column, read, encoding):
    """``{split: RawSplit}`` from explicit files, a folder, one file or a Hub dataset, and the data's display name.

    ``read(path, encoding=, split=)`` reads one file; ``encoding`` is one codec for every file or one per split."""
    explicit = {"train": train_file, "validation": validation_file, "test": test_file}
    explicit = {name: Path(path) for name, path in explicit.items() if path is not None}
    if explicit and path_or_id is not None:
        raise DataError("Give either a dataset (--dataset_name) or --train_file/--validation_file/--test_file, not both.")

    def read_all(files: dict[str, Path]) -> dict[str, RawSplit]:
        return {name: read(file, encoding=encoding_of(encoding, name), split=name) for name, file in files.items()}

    if explicit:
        return read_all(explicit), ", ".join(p.name for p in explicit.values())
    if path_or_id is None:
        raise DataError("No data given: pass a Hub dataset id, a folder or file (--dataset_name), or --train_file.")
    path = Path(path_or_id)
    if path.is_dir() and _is_dataset_repo(path):  # a clone of a Hub dataset repo: its README declares the splits
        return _read_hub(str(path), config_name, splits, text_column), path.name
    if path.is_dir():
        return read_all(_folder_splits(path)), path.name
    if path.is_file():
        return read_all({"train": path}), path.name
    return _read_hub(str(path_or_id), config_name, splits, text_column), str(path_or_id)


def parse_encodings(values: str | list[str]) -> str | dict[str, str]:
    """``--encoding``: one codec for every file (``cp1252``), or one per split (``train=cp1252 test=utf-8``;
    a split not named is read as UTF-8)."""
    values = [values] if isinstance(values, str) else list(values)
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    per_split = {}
    for value in values:
        split, equals, codec = value.partition("=")
        if not equals or SPLIT_ALIASES.get(split.lower()) is None:
            raise DataError(f"--encoding {value!r}: give one encoding for every file, or split=encoding entries (train=cp1252 test=utf-8).")
        per_split[SPLIT_ALIASES[split.lower()]] = codec
    return per_split


def encoding_of(encoding: str | Mapping[str, str], split: str) -> str:
    return encoding if isinstance(encoding, str) else encoding.get(split, "utf-8")


def _is_dataset_repo(folder: Path) -> bool:
    """A folder laid out as a Hub dataset repository: ``README.md`` metadata with ``configs``/``dataset_info``."""
    readme = folder / "README.md"
    if not readme.is_file():
        return False
    match = re.match(r"^---\n(.*?)\n---", readme.read_text(encoding="utf-8", errors="replace"), re.DOTALL)
    return bool(match and re.search(r"^(configs|dataset_info):", match.group(1), re.MULTILINE))


def _folder_splits(folder: Path) -> dict[str, Path]:
    """A folder's data files by split: ``train.csv``, ``dev.tsv``, ``Test.jsonl``... (case-insensitive)."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in LOCAL_FORMATS)  # README.md etc. are not data
    if not files:
        raise DataError(f"{folder} holds no {'/'.join(sorted(LOCAL_FORMATS))} files.")
    by_split: dict[str, Path] = {}
    for file in files:
        split = SPLIT_ALIASES.get(file.stem.lower())
        if split is None:
            raise DataError(
                f"{folder}: cannot tell which split {file.name} is (files: {[f.name for f in files]}). Name each file after "
                "its split (train, validation/valid/val/dev/eval, test, e.g. train.csv, dev.csv, test.csv), or pass "
                "--train_file/--validation_file/--test_file. A single file of all the data is split 70/10/20 when given alone."
            )
        if split in by_split:
            raise DataError(f"{folder}: both {by_split[split].name} and {file.name} look like the {split} split; keep one.")
        by_split[split] = file
    return by_split


def read_file(
    path: Path, text_column: str, label_columns: Sequence[str], encoding: str, quoting: str = "minimal", split: str = "train"
) -> RawSplit:
    """One CSV/TSV/JSON(L)/Parquet file; the text column always as strings, rows named by their line.

    Errors name the file and the split it was given for: an empty or header-only file, a CSV whose one
    column says its delimiter is another, TSV lines merged by an unclosed quote, bytes of another encoding.
    """
    if not path.is_file():
        raise DataError(f"{path} (the {split} split) does not exist.")
    suffix = path.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {sorted(LOCAL_FORMATS)}.")
    if quoting not in QUOTINGS:
        raise ValueError(f"quoting must be one of {tuple(QUOTINGS)}, got {quoting!r}.")
    builder = LOCAL_FORMATS[suffix]
    kwargs: dict = {}
    row_names = None
    if builder in ("csv", "json"):
        text, encoding = _decode(path, encoding)
        if not text.strip():
            raise DataError(f"{path} (the {split} split) is empty; give it a header line and rows, or leave the {split} file out.")
        kwargs["encoding"] = encoding
    if builder == "csv":
        sep = "\t" if suffix == ".tsv" else ","
        _check_header(path, text, sep, split)
        # the user's text column is text even when it looks numeric or like a missing value ("0123", "1e5", "NA");
        # only an empty cell counts as missing, and only in the label columns (an empty text is its own error)
        kwargs |= {"sep": sep, "quoting": QUOTINGS[quoting], "converters": {text_column: str}, "keep_default_na": False}
        kwargs["na_values"] = {column: [""] for column in label_columns}
        starts = _record_lines(text, sep, QUOTINGS[quoting])
        if not starts:
            raise DataError(f"{path} (the {split} split) has a header line but no rows.")
        if sep == "\t" and quoting == "minimal":
            _check_tsv_quotes(path, text, starts)
        row_names = [f"line {n}" for n in starts]
    elif suffix == ".jsonl":
        row_names = [f"line {n}" for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    try:
        dataset = load_dataset(builder, data_files={split: str(path)}, split=split, **kwargs)  # "Generating <split> split"
    except Exception as error:
        raise DataError(f"{path} (the {split} split): could not be read as {builder.upper()} ({type(error).__name__}: {error}).") from error
    if len(dataset) == 0:
        raise DataError(f"{path} (the {split} split) holds no rows.")
    if row_names is not None and len(row_names) != len(dataset):
        row_names = None  # the parsers disagree on record boundaries; fall back to data-row numbers
    if builder == "json" and text_column in dataset.column_names and dataset.features[text_column] != Value("string"):
        dataset = dataset.cast_column(text_column, Value("string"))
    return RawSplit(dataset, path.name, row_names)


BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def _decode(path: Path, encoding: str) -> tuple[str, str]:
    """The file's text and the encoding it was read with, or an error naming the line that does not decode.

    A byte-order mark says the encoding itself (and wins over ``encoding``). A file that is valid UTF-8,
    with characters beyond ASCII, is refused under another ``encoding``: cp1252 or latin-1 would read
    every such character as two or three others (``é`` as ``Ã©``) without any error.
    """
    try:
        codecs.lookup(encoding)
    except LookupError as error:
        raise DataError(f"Unknown encoding {encoding!r} for {path}; use a Python codec name such as utf-8, latin-1 or cp1252.") from error
    raw = path.read_bytes()
    for mark, marked in BOMS:
        if raw.startswith(mark):
            if codecs.lookup(encoding).name not in ("utf-8", codecs.lookup(marked).name):
                logger.warning("%s starts with a %s byte-order mark: read as %s, not as %s.", path, marked, marked, encoding)
            encoding = marked
            break
    codec = codecs.lookup(encoding).name
    if codec not in ("utf-8", "utf-8-sig", "utf-16") and not raw.isascii():
        _refuse_utf8_read_as(path, raw, encoding)
    try:
        return raw.decode(encoding), encoding
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line} (byte offset {error.start}): byte {raw[error.start]:#04x} is not valid {encoding}. "
            "Pass the file's encoding (--encoding latin-1, cp1252, ...; per file: --encoding train=cp1252 test=utf-8) "
            "or re-save it as UTF-8."
        ) from error


def _refuse_utf8_read_as(path: Path, raw: bytes, encoding: str) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return  # not UTF-8: the given encoding may well be right
    position = next(i for i, c in enumerate(text) if ord(c) > 127)
    line = text.count("\n", 0, position) + 1
    char = text[position]
    raise DataError(
        f"{path} line {line}: the file is valid UTF-8 ({char!r}), but --encoding {encoding} would read that character as "
        f"{char.encode('utf-8').decode(encoding, errors='replace')!r}. Give each file its own encoding, e.g. "
        f"--encoding train={encoding} validation=utf-8 test=utf-8 (a file's split name, then its encoding)."
    )


def _check_header(path: Path, text: str, sep: str, split: str) -> None:
    """A header of one column means the file is not separated by ``sep``: say which separator it seems to use."""
    header = next(line for line in text.splitlines() if line.strip())
    if len(next(csv.reader([header], delimiter=sep))) > 1:
        return
    found = {name: header.count(mark) for mark, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'"), (",", "commas")) if mark != sep}
    guess = max(found, key=found.get)
    seems = f"; it seems separated by {guess}" if found[guess] else ""
    expected = "tab-separated (.tsv)" if sep == "\t" else "comma-separated (.csv)"
    raise DataError(
        f"{path} (the {split} split): its header {header[:80]!r} is a single column, so the file is not {expected}{seems}. "
        "Save it with commas as a .csv, or with tabs as a .tsv, with a header naming the text and label columns."
    )


def _check_tsv_quotes(path: Path, text: str, starts: list[int]) -> None:
    """TSV lines merged by a quote: a field that opens ``"`` and closes it lines later, swallowing whole rows.

    In a tab-separated file a row spanning lines is almost always that (a text that begins with a
    quotation mark), and pandas would silently read the swallowed rows as part of one text.
    """
    lines = text.splitlines()
    ends = [*(start - 1 for start in starts[1:]), len(lines)]
    for start, end in zip(starts, ends, strict=True):
        while end > start and not lines[end - 1].strip():
            end -= 1  # trailing blank lines belong to no record
        if end > start and any("\t" in line for line in lines[start:end]):
            rows = sum(1 for line in lines[1:] if line.strip())
            raise DataError(
                f"{path} line {start}: a double quote opens a field that closes only on line {end}, so lines {start}-{end} "
                f"would be read as one row ({rows} lines, {len(starts)} rows). Remove or close the stray quote, or pass "
                "--quoting none if quotes in this file are ordinary characters (tab-separated files rarely quote)."
            )


def _record_lines(text: str, sep: str, quoting: int = csv.QUOTE_MINIMAL) -> list[int]:
    """The line each data record starts on (1-based, header = line 1), quoted line breaks included."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quoting=quoting)
    starts, previous = [], 0
    for index, record in enumerate(reader):
        if index > 0 and any(field.strip() for field in record):
            starts.append(previous + 1)
        previous = reader.line_num
    return starts


def _read_hub(dataset_id: str, config_name: str | None, wanted: list[str] | None, text_column: str) -> dict[str, RawSplit]:
    """A Hub dataset's splits under our names; splits that are not train/validation/test are left out, with a log line.

    ``wanted`` chooses explicitly: ``["train", "test"]`` or ``["train=train", "validation=dev"]``.
    """
    try:
        loaded = load_dataset(dataset_id, config_name)
    except Exception as error:
        raise DataError(
            f"Could not load dataset {dataset_id!r} ({type(error).__name__}: {error}); offline, pass local files "
            "(--train_file/--validation_file/--test_file or a folder)."
        ) from error
    if wanted:
        mapping = {}
        for entry in wanted:
            ours, _, theirs = entry.partition("=")
            theirs = theirs or ours
            ours = SPLIT_ALIASES.get(ours.lower())
            if ours is None or theirs not in loaded:
                raise DataError(f"--splits {entry!r}: use train/validation/test[=<split of {dataset_id}>]; it has {list(loaded)}.")
            mapping[ours] = theirs
    else:
        mapping = {}
        for theirs in loaded:
            ours = SPLIT_ALIASES.get(theirs.lower())
            if ours is not None and ours not in mapping:
                mapping[ours] = theirs
        ignored = [name for name in loaded if name not in mapping.values()]
        if ignored:
            logger.warning("%s: ignoring splits %s (not train/validation/test; choose with --splits).", dataset_id, ignored)
    result = {}
    for ours, theirs in mapping.items():
        dataset = loaded[theirs]
        if text_column in dataset.column_names and dataset.features[text_column] != Value("string"):
            dataset = dataset.cast_column(text_column, Value("string"))
        result[ours] = RawSplit(dataset, f"{dataset_id} ({theirs} split)")
    return result
