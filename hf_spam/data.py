"""Chapter 6's data as ``datasets``: the SMS Spam Collection prepared exactly as the book, any other
text-classification data through the same balancing and splitting, and GPT-2 tokenization with the
book's padding choices.

Sampling uses ``numpy.random.RandomState(seed)`` the way pandas' ``DataFrame.sample`` does, so the
balanced set and the 70/10/20 split are row for row those of the book's listings 6.2 and 6.3 (a test
runs the book's pandas code as the reference).
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import logging
import os
import re
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, DownloadConfig, DownloadManager, Features, Value, load_dataset
from transformers import DataCollatorWithPadding

from .errors import DataError
from .targets import MULTI_LABEL, REGRESSION, SINGLE_LABEL, infer_problem_type, multi_label_targets, regression_targets
from .tokenizer import END_OF_TEXT, gpt2_tokenizer, tiktoken_gpt2

logger = logging.getLogger(__name__)

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_MEMBER = "SMSSpamCollection"
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_LABELS = ("ham", "spam")
PADDINGS = ("longest_train", "max_length", "dynamic", "none")
LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


# ---------------------------------------------------------------------------------------------
# The SMS Spam Collection


def sms_spam_url(url: str | None = None) -> str:
    """``url``, else ``HF_SPAM_SMS_SPAM_URL`` (a mirror, or a test's loopback server), else UCI's."""
    return url or os.environ.get("HF_SPAM_SMS_SPAM_URL") or SMS_SPAM_URL


def download_sms_spam(url: str | None = None, cache_dir: str | None = None) -> Path:
    """The UCI zip (from :func:`sms_spam_url`), downloaded once into the datasets cache (later calls make
    no network request)."""
    url = sms_spam_url(url)
    manager = DownloadManager(download_config=DownloadConfig(cache_dir=cache_dir, use_etag=False))
    try:
        return Path(manager.download(url))
    except Exception as error:
        raise DataError(
            f"Could not download the SMS Spam Collection from {url} ({type(error).__name__}: {error}). "
            "Offline, pass a local copy: data_file=/path/to/SMSSpamCollection (or the UCI zip)."
        ) from error


def read_sms_spam_bytes(data_file: str | os.PathLike) -> tuple[bytes, str]:
    """The raw ``SMSSpamCollection`` bytes from the file itself or from the UCI zip, and a display name."""
    path = Path(data_file)
    if not path.is_file():
        raise DataError(
            f"SMS data file {path} does not exist; pass the extracted SMSSpamCollection or the UCI zip, or omit it to download."
        )
    if not zipfile.is_zipfile(path):
        return path.read_bytes(), str(path)
    with zipfile.ZipFile(path) as archive:
        members = archive.namelist()
        member = next((m for m in members if Path(m).name == SMS_SPAM_MEMBER), None)
        if member is None:
            raise DataError(f"{path} has no {SMS_SPAM_MEMBER} (it holds {members[:10]}); is it the UCI 'sms+spam+collection.zip'?")
        return archive.read(member), f"{path}:{member}"


def check_sms_lines(raw: bytes, name: str) -> str:
    """Decode and validate every line, naming the first bad one; return the text with LF line endings.

    Checked per physical line, before pandas' quote handling can merge lines: a label, a tab, a
    non-empty message, UTF-8 throughout. A UTF-8 byte-order mark and CRLF/CR line endings are
    accepted and reported; blank lines are skipped (as pandas does) and counted.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        logger.warning("%s: removed a UTF-8 byte-order mark at the start of the file.", name)
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{name} line {line}: byte {raw[error.start]:#04x} is not UTF-8; re-save the file as UTF-8.") from error
    if "\r" in text:
        logger.warning("%s: %d CRLF and %d CR line endings read as LF.", name, text.count("\r\n"), text.count("\r") - text.count("\r\n"))
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    blank = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            blank += 1
            continue
        label, tab, message = line.partition("\t")
        if not tab:
            raise DataError(
                f"{name} line {number}: no tab; every line must be 'ham<TAB>message' or 'spam<TAB>message' (got {line[:60]!r})."
            )
        if label not in SMS_LABELS:
            hint = " If this is a header row, remove it: the file has none." if number == 1 else ""
            raise DataError(f"{name} line {number}: unknown label {label!r}; expected 'ham' or 'spam'.{hint}")
        if not message.strip():
            raise DataError(f"{name} line {number}: empty message; remove the line or give it a text.")
    if blank:
        logger.warning("%s: skipped %d blank lines.", name, blank)
    return text


def parse_sms_spam(text: str, name: str) -> pd.DataFrame:
    """The book's ``pd.read_csv(sep="\\t", header=None, names=["Label", "Text"])`` on validated text.

    Its default quoting joins a few lines whose message opens an unbalanced double quote with the
    following lines (5,574 lines -> 5,572 rows, the book's numbers); that is kept, and reported.
    """
    frame = pd.read_csv(io.StringIO(text), sep="\t", header=None, names=["Label", "Text"])
    lines = sum(1 for line in text.split("\n") if line.strip())
    if len(frame) != lines:
        logger.warning(
            "%s: pandas' default quoting (the book's read_csv call) joined %d of %d lines into neighbouring messages, giving %d messages.",
            name,
            lines - len(frame),
            lines,
            len(frame),
        )
    return frame


def fetch_sms_spam(url: str | None = None, cache_dir: str | None = None) -> tuple[bytes, str]:
    """The ``SMSSpamCollection`` bytes of the downloaded UCI zip (:func:`download_sms_spam`), checked
    against their sha256, and a display name."""
    raw, name = read_sms_spam_bytes(download_sms_spam(url, cache_dir))
    if hashlib.sha256(raw).hexdigest() != SMS_SPAM_SHA256:
        raise DataError(
            f"{name} (downloaded from {sms_spam_url(url)}) has sha256 {hashlib.sha256(raw).hexdigest()}, expected {SMS_SPAM_SHA256}: "
            "the download is corrupt or the file changed. Delete it and retry, or pass data_file=."
        )
    return raw, name


def load_sms_spam_frame(data_file: str | os.PathLike | None = None, url: str | None = None, cache_dir: str | None = None) -> pd.DataFrame:
    """The SMS Spam Collection as the book's DataFrame (``Label``, ``Text``), from a local file or UCI."""
    raw, name = fetch_sms_spam(url, cache_dir) if data_file is None else read_sms_spam_bytes(data_file)
    return parse_sms_spam(check_sms_lines(raw, name), name)


def load_sms_spam(
    data_file: str | os.PathLike | None = None,
    *,
    split: str = "chapter",
    balance: bool = True,
    seed: int = 123,
    train_frac: float = 0.7,
    validation_frac: float = 0.1,
    url: str | None = None,
    cache_dir: str | None = None,
) -> DatasetDict:
    """Chapter 6's SMS data: balanced 747/747 (seed 123), split 70/10/20 -> 1,045 / 149 / 300 rows.

    ``data_file`` is the extracted ``SMSSpamCollection`` or the UCI zip; without it the zip is
    downloaded once into the datasets cache. Columns: ``text`` and ``label`` (``ClassLabel`` ham=0, spam=1).

    ``split="bonus"`` gives the rows of the chapter's bonus experiments script instead, which
    shuffles the balanced set once (``sample(frac=1, random_state=123)``) before the chapter's
    shuffle-and-cut, so its splits hold other messages than the chapter's.
    """
    if split not in ("chapter", "bonus"):
        raise ValueError(f"split must be 'chapter' or 'bonus', got {split!r}.")
    frame = load_sms_spam_frame(data_file, url, cache_dir)
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(SMS_LABELS))})
    dataset = Dataset.from_dict({"text": frame["Text"].tolist(), "label": [SMS_LABELS.index(x) for x in frame["Label"]]}, features=features)
    if balance:
        dataset = balance_classes(dataset, seed)
    if split == "bonus":
        dataset = dataset.select(np.random.RandomState(seed).choice(len(dataset), size=len(dataset), replace=False))
    return split_like_the_book(dataset, train_frac, validation_frac, seed)


# ---------------------------------------------------------------------------------------------
# Balancing and splitting (listings 6.2 and 6.3)


def balance_classes(dataset: Dataset, seed: int = 123, label_column: str = "label") -> Dataset:
    """Undersample every class to the smallest class's size (listing 6.2's ``create_balanced_dataset``).

    Classes come in label order; a larger class is replaced by ``RandomState(seed).choice`` of its rows
    (pandas' ``sample(n, random_state=seed)``), the smallest keeps its order. For ham/spam this is the
    book's ``concat([ham.sample(747, random_state=123), spam])``.
    """
    labels = np.asarray(dataset[label_column])
    counts = Counter(labels.tolist())
    smallest = min(counts.values())
    rng = np.random.RandomState(seed)
    keep = []
    for label in sorted(counts):
        rows = np.flatnonzero(labels == label)
        keep.append(rows[rng.choice(len(rows), size=smallest, replace=False)] if len(rows) > smallest else rows)
    names = dataset.features[label_column].names if isinstance(dataset.features[label_column], ClassLabel) else None
    before = {names[k] if names else k: v for k, v in sorted(counts.items())}
    logger.info("Classes before balancing %s -> %d each after.", before, smallest)
    return dataset.select(np.concatenate(keep))


def split_like_the_book(dataset: Dataset, train_frac: float = 0.7, validation_frac: float = 0.1, seed: int = 123) -> DatasetDict:
    """Shuffle with ``RandomState(seed)`` (pandas' ``sample(frac=1)``) and cut, as listing 6.3's ``random_split``."""
    if not (0 < train_frac and 0 <= validation_frac and train_frac + validation_frac < 1):
        raise ValueError(
            f"train_frac ({train_frac}) and validation_frac ({validation_frac}) must be positive and leave room for a test split."
        )
    shuffled = dataset.select(np.random.RandomState(seed).choice(len(dataset), size=len(dataset), replace=False))
    train_end = int(len(shuffled) * train_frac)
    validation_end = train_end + int(len(shuffled) * validation_frac)
    splits = DatasetDict(
        train=shuffled.select(range(train_end)),
        validation=shuffled.select(range(train_end, validation_end)),
        test=shuffled.select(range(validation_end, len(shuffled))),
    )
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(
                f"The {name} split is empty ({len(dataset)} rows, fractions {train_frac}/{validation_frac}); use more data or other fractions."
            )
    return splits


# ---------------------------------------------------------------------------------------------
# Any other text-classification data

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
INVALID_ROWS = ("error", "drop")
QUOTINGS = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}  # CSV's double quotes, or quotes as ordinary text


@dataclass
class ClassificationData:
    """Labelled ``text``/``label`` splits and where each came from.

    ``origin`` says per split whether it is the user's (``"user: train.csv"``) or was cut with the
    book's procedure (``"cut from train"``); ``dropped`` lists per split the rows left out by
    ``invalid_rows="drop"`` (as the user's editor numbers them); ``source`` names the data for the
    model card (a Hub id or file names, never a relative path).
    """

    splits: DatasetDict
    source: str
    origin: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    problem_type: str = SINGLE_LABEL
    label_names: list[str] = field(default_factory=list)  # the classes, or the regression targets

    def __post_init__(self) -> None:
        feature = self.splits["train"].features["label"] if "train" in self.splits else None
        if not self.label_names and isinstance(feature, ClassLabel):
            self.label_names = list(feature.names)

    def summary(self) -> str:
        lines = [f"{name}: {len(split)} rows ({self.origin.get(name, 'given')})" for name, split in self.splits.items()]
        for name, rows in self.dropped.items():
            if rows:
                lines.append(f"{name}: dropped {len(rows)} invalid rows ({', '.join(rows[:5])}{', ...' if len(rows) > 5 else ''})")
        return "\n".join(lines)


@dataclass
class _RawSplit:
    """One split as read, before renaming: the dataset plus how to name its rows in messages."""

    dataset: Dataset
    where: str  # "train.csv" or "imdb (test split)"
    row_names: list[str] | None = None  # per row, e.g. "line 7"; None: "row <index>"

    def row_name(self, index: int) -> str:
        return self.row_names[index] if self.row_names is not None else f"row {index}"


def load_text_classification(
    path_or_id: str | os.PathLike | None = None,
    *,
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    text_column: str = "text",
    label_column: str | Sequence[str] = "label",
    problem_type: str | None = None,
    config_name: str | None = None,
    splits: list[str] | None = None,
    label_names: list[str] | None = None,
    invalid_rows: str = "error",
    encoding: str | Mapping[str, str] = "utf-8",
    quoting: str = "minimal",
    allow_unseen_labels: bool = False,
    balance: bool = False,
    seed: int = 123,
    train_frac: float = 0.7,
    validation_frac: float = 0.1,
) -> ClassificationData:
    """Text-classification data from a Hub dataset, a folder, one file, or one file per split.

    The user's splits are kept as given (``train_file``/``validation_file``/``test_file``, a folder's
    ``train``/``validation``/``test`` files under their usual names, a Hub dataset's splits); only a
    missing split is cut, with the book's procedure (a ``RandomState(seed)`` shuffle, then a cut),
    and from the training data only, so a user's test rows never reach training. A single file is
    split 70/10/20 as the book does.

    Texts are always read as strings (a column of numbers or codes stays text); labels may be strings
    (class names, sorted) or integers (named by ``label_names``). ``problem_type`` (transformers' names)
    reads them as classes (single-label, the default), as numbers to predict (``"regression"``, one
    target per ``label_column``), or as sets of classes (``"multi_label_classification"``, inferred for
    several 0/1 columns or a column of lists; see ``targets``). Rows with an empty text or a missing
    label stop the load with the file and the line the user's editor shows, unless
    ``invalid_rows="drop"``, which drops and reports them. ``balance`` undersamples the training data
    only (before cutting, when the other splits are cut from it, as the book).
    """
    if invalid_rows not in INVALID_ROWS:
        raise ValueError(f"invalid_rows must be one of {INVALID_ROWS}, got {invalid_rows!r}.")
    label_columns = [label_column] if isinstance(label_column, str) else list(label_column)
    read = functools.partial(_read_file, text_column=text_column, label_columns=label_columns, quoting=quoting)
    raw, source = _read_splits(path_or_id, train_file, validation_file, test_file, config_name, splits, text_column, read, encoding)
    for part in raw.values():
        missing = [c for c in (text_column, *label_columns) if c not in part.dataset.column_names]
        if missing:
            raise DataError(
                f"{part.where} has no column {missing[0]!r}; its columns are {part.dataset.column_names}. "
                "Name yours with --text_column/--label_column."
            )
    columns = (text_column, *label_columns)
    raw = {name: replace(part, dataset=part.dataset.select_columns(list(columns))) for name, part in raw.items()}
    problem_type = infer_problem_type(problem_type, raw, label_columns)
    if balance and problem_type != SINGLE_LABEL:
        raise DataError(f"--balance undersamples classes; it has no meaning for {problem_type} (leave it out).")
    dropped_rows: dict[str, list[str]] = {}
    for name, part in list(raw.items()):
        bad = _invalid_rows(part, text_column, label_columns, invalid_rows)
        dropped_rows[name] = [part.row_name(i) for i in bad]
        if bad:
            keep = sorted(set(range(len(part.dataset))) - set(bad))
            raw[name] = _RawSplit(part.dataset.select(keep), part.where, [part.row_names[i] for i in keep] if part.row_names else None)
            shown = ", ".join(dropped_rows[name][:5]) + (", ..." if len(bad) > 5 else "")
            logger.warning("%s: dropped %d rows with an empty text or a missing label (%s).", part.where, len(bad), shown)
    if problem_type == REGRESSION:
        data, names = regression_targets(raw, text_column, label_columns)
    elif problem_type == MULTI_LABEL:
        data, names = multi_label_targets(raw, text_column, label_columns, label_names, allow_unseen_labels)
    else:
        data = _as_class_labels(raw, text_column, label_columns[0], label_names, allow_unseen_labels)
        names = list(data[next(iter(data))].features["label"].names)
    for name, split in data.items():
        if len(split) == 0:
            raise DataError(f"{raw[name].where} has no rows left; check the file or --invalid_rows.")
    if "train" not in data:
        raise DataError(f"{source}: no training data among {list(data)}; give --train_file or a file named train.*")
    if balance:
        data["train"] = balance_classes(data["train"], seed)
    given = list(data)
    data = _cut_missing(data, seed, train_frac, validation_frac)
    if problem_type == SINGLE_LABEL:
        _check_two_classes(data, raw["train"].where, label_columns[0])
    origin = {name: f"user: {raw[name].where}" if name in given else f"cut from {raw['train'].where}" for name in data}
    if len(given) == 1:
        origin["train"] += f" (the rest after cutting {', '.join(n for n in data if n != 'train')})"
    result = ClassificationData(data, source, origin, dropped_rows, problem_type, names)
    logger.info("Splits:\n%s", result.summary())
    return result


def _read_splits(path_or_id, train_file, validation_file, test_file, config_name, splits, text_column, read, encoding):
    """``{split: _RawSplit}`` from explicit files, a folder, one file or a Hub dataset, and the data's display name.

    ``read(path, encoding=, split=)`` reads one file; ``encoding`` is one codec for every file or one per split."""
    explicit = {"train": train_file, "validation": validation_file, "test": test_file}
    explicit = {name: Path(path) for name, path in explicit.items() if path is not None}
    if explicit and path_or_id is not None:
        raise DataError("Give either a dataset (--dataset_name) or --train_file/--validation_file/--test_file, not both.")

    def read_all(files: dict[str, Path]) -> dict[str, _RawSplit]:
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


def _read_file(
    path: Path, text_column: str, label_columns: Sequence[str], encoding: str, quoting: str = "minimal", split: str = "train"
) -> _RawSplit:
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
        dataset = load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as error:
        raise DataError(f"{path} (the {split} split): could not be read as {builder.upper()} ({type(error).__name__}: {error}).") from error
    if len(dataset) == 0:
        raise DataError(f"{path} (the {split} split) holds no rows.")
    if row_names is not None and len(row_names) != len(dataset):
        row_names = None  # the parsers disagree on record boundaries; fall back to data-row numbers
    if builder == "json" and text_column in dataset.column_names and dataset.features[text_column] != Value("string"):
        dataset = dataset.cast_column(text_column, Value("string"))
    return _RawSplit(dataset, path.name, row_names)


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


def _read_hub(dataset_id: str, config_name: str | None, wanted: list[str] | None, text_column: str) -> dict[str, _RawSplit]:
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
        result[ours] = _RawSplit(dataset, f"{dataset_id} ({theirs} split)")
    return result


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip())


def _invalid_rows(part: _RawSplit, text_column: str, label_columns: Sequence[str], invalid_rows: str) -> list[int]:
    """Indices of rows with an empty text or a missing label (-1 counts as missing, as in Hub ``ClassLabel`` data;
    an empty list is a multi-label row of no class, not missing).

    ``invalid_rows="error"`` raises on the first, naming the file, the line and the user's column.
    """
    bad = []
    class_labels = {c for c in label_columns if isinstance(part.dataset.features[c], ClassLabel)}
    labels = [part.dataset[c] for c in label_columns]
    for index, (text, *row) in enumerate(zip(part.dataset[text_column], *labels, strict=True)):
        problem = None
        missing = next((c for c, v in zip(label_columns, row, strict=True) if _is_missing(v) or (c in class_labels and v < 0)), None)
        if not isinstance(text, str) or not text.strip():
            problem = f"column {text_column!r} is empty ({text!r})"
        elif missing is not None:
            problem = f"column {missing!r} is missing ({row[label_columns.index(missing)]!r})"
        if problem is None:
            continue
        if invalid_rows == "error":
            raise DataError(
                f"{part.where} {part.row_name(index)}: {problem}. Fill or remove the row, or pass --invalid_rows drop to drop such rows."
            )
        bad.append(index)
    return bad


def _as_class_labels(
    raw: dict[str, _RawSplit], text_column: str, label_column: str, label_names: list[str] | None, allow_unseen: bool
) -> DatasetDict:
    """Rename to ``text``/``label`` and make ``label`` one ``ClassLabel`` shared by every split.

    String labels keep their names (sorted, or in ``label_names``' order); integer labels are class ids
    named by ``label_names`` (default: the ids as strings). A class present outside the training
    split but not in it is an error unless ``allow_unseen``.
    """
    feature = raw[next(iter(raw))].dataset.features[label_column]
    values = sorted({v for part in raw.values() for v in part.dataset[label_column]}, key=lambda v: (isinstance(v, str), v))
    if isinstance(feature, ClassLabel):
        names = list(label_names or feature.names)
        if len(names) != feature.num_classes:
            raise DataError(f"--label_names gives {len(names)} names for {feature.num_classes} classes ({feature.names}).")
        lookup = {i: i for i in range(feature.num_classes)}
    elif all(isinstance(v, str) for v in values):
        _warn_label_variants(raw, label_column)
        names = list(label_names) if label_names else values
        unknown = [v for v in values if v not in names]
        if unknown:
            raise DataError(f"Labels {unknown[:5]} of column {label_column!r} are not in --label_names {names}.")
        lookup = {name: i for i, name in enumerate(names)}
    else:
        numbers = [float(v) if not isinstance(v, str) else v for v in values]
        if any(isinstance(v, str) or not v.is_integer() or v < 0 for v in numbers):
            raise DataError(
                f"Column {label_column!r} mixes values {values[:6]}: use class names, or class ids 0, 1, 2, ... (named with --label_names); "
                "numbers to predict are --problem_type regression."
            )
        count = int(max(numbers)) + 1
        names = list(label_names) if label_names else [str(i) for i in range(count)]
        if len(names) < count:
            raise DataError(f"Column {label_column!r} has class id {count - 1} but --label_names names only {len(names)} classes: {names}.")
        lookup = {v: int(v) for v in values}
    class_label = ClassLabel(names=names)
    features = Features({"text": Value("string"), "label": class_label})
    data = DatasetDict()
    for name, part in raw.items():
        data[name] = Dataset.from_dict(
            {"text": part.dataset[text_column], "label": [lookup[v] for v in part.dataset[label_column]]}, features=features
        )
    if "train" in data:
        seen = set(data["train"]["label"])
        for name, split in data.items():
            unseen = sorted(set(split["label"]) - seen)
            if unseen:
                message = f"{raw[name].where}: classes {[names[i] for i in unseen]} never occur in the training data."
                if not allow_unseen:
                    raise DataError(message + " The model could not learn them; fix the split or pass --allow_unseen_labels.")
                logger.warning(message)
    return data


def _warn_label_variants(raw: dict[str, _RawSplit], label_column: str) -> None:
    """Labels that differ only in case or surrounding spaces (``spam``, ``spam ``, ``Spam``) are separate
    classes, as given; almost always a typo, so say so with the row counts."""
    counts = Counter(v for part in raw.values() for v in part.dataset[label_column])
    groups: dict[str, list[str]] = {}
    for value in counts:
        groups.setdefault(value.strip().casefold(), []).append(value)
    for spellings in groups.values():
        if len(spellings) > 1:
            shown = ", ".join(f"{v!r} ({counts[v]} rows)" for v in sorted(spellings, key=counts.get, reverse=True))
            logger.warning(
                "Column %r has labels that differ only in case or surrounding spaces: %s. They are separate classes; "
                "if they mean one class, write them alike in your file(s).",
                label_column,
                shown,
            )


def _check_two_classes(data: DatasetDict, where: str, label_column: str) -> None:
    present = sorted(set(data["train"]["label"]))
    if len(present) < 2:
        only = data["train"].features["label"].names[present[0]] if present else None
        raise DataError(
            f"{where}: every training row has the label {only!r} (column {label_column!r}); a classifier needs at least two "
            "classes to learn from. Check --label_column and the file."
        )


def _cut_missing(data: DatasetDict, seed: int, train_frac: float, validation_frac: float) -> DatasetDict:
    """Cut the splits the user did not give from the training data, with the book's shuffle-and-cut."""
    if "validation" not in data and "test" not in data:
        return split_like_the_book(data["train"], train_frac, validation_frac, seed)
    missing = [name for name in ("validation", "test") if name not in data]
    if not missing:
        return DatasetDict({k: data[k] for k in ("train", "validation", "test")})
    (name,) = missing
    # the share the missing split would have had of the training data under train/validation/test fractions
    share = (
        validation_frac / (train_frac + validation_frac)
        if name == "validation"
        else (1 - train_frac - validation_frac) / (1 - validation_frac)
    )
    train = data["train"]
    shuffled = train.select(np.random.RandomState(seed).choice(len(train), size=len(train), replace=False))
    keep = len(train) - int(len(train) * share)
    if keep == len(train) or keep == 0:
        raise DataError(f"The training data ({len(train)} rows) is too small to cut a {name} split from; give one.")
    data = DatasetDict(data)
    data["train"], data[name] = shuffled.select(range(keep)), shuffled.select(range(keep, len(train)))
    return DatasetDict({k: data[k] for k in ("train", "validation", "test")})


# ---------------------------------------------------------------------------------------------
# Tokenization and padding


@dataclass
class TokenizedData:
    """Tokenized splits plus what the chapter prints about them."""

    splits: DatasetDict
    padding: str
    max_length: int | None  # the length every example is padded/truncated to, if fixed
    truncated: dict[str, int] = field(default_factory=dict)  # per split: texts cut to fit
    collator: DataCollatorWithPadding | None = None  # pads each batch (dynamic / no padding)


def _gpt2_ids(batch: dict) -> dict:
    """tiktoken's GPT-2 ids for a batch of texts. ``datasets`` fingerprints a map function by pickling it and
    what it refers to: a closure over the ``Encoding`` pickled GPT-2's 50k-entry table once per split (most
    of the tokenization's time); this function finds the encoding through :func:`tiktoken_gpt2` when it runs."""
    return {"input_ids": tiktoken_gpt2().encode_batch(batch["text"], allowed_special={END_OF_TEXT})}


def tokenize(
    splits: DatasetDict, padding: str = "longest_train", *, max_length: int | None = None, context_length: int = 1024
) -> TokenizedData:
    """tiktoken's GPT-2 ids with the book's padding choices.

    - ``longest_train`` (the book): pad every split to the longest training text; longer
      validation/test texts are truncated to it.
    - ``max_length``: pad to ``max_length`` (exercise 6.1: the context length, 1024).
    - ``dynamic``: pad each batch to its longest member (a data collator).
    - ``none``: no padding (batch size 1, bonus row 14).
    Texts longer than the model's ``context_length`` are always truncated; every truncation is counted
    and logged. Pads are ``<|endoftext|>`` (50256) with ``attention_mask`` 0.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}.")
    pad_id = tiktoken_gpt2().eot_token
    encoded = splits.map(_gpt2_ids, batched=True, desc="Tokenizing")
    limit = context_length
    if padding == "longest_train":
        limit = min(max(len(ids) for ids in encoded["train"]["input_ids"]), context_length)
    elif padding == "max_length":
        limit = min(max_length or context_length, context_length)
    truncated = {name: sum(len(ids) > limit for ids in split["input_ids"]) for name, split in encoded.items()}
    for name, count in truncated.items():
        if count:
            logger.warning("%d %s texts are longer than %d tokens and were truncated.", count, name, limit)
    fixed = padding in ("longest_train", "max_length")

    def pad(batch: dict) -> dict:
        ids = [row[:limit] for row in batch["input_ids"]]
        if not fixed:
            return {"input_ids": ids}
        return {
            "input_ids": [row + [pad_id] * (limit - len(row)) for row in ids],
            "attention_mask": [[1] * len(row) + [0] * (limit - len(row)) for row in ids],
        }

    tokenized = encoded.map(pad, batched=True, desc="Padding").remove_columns("text")
    collator = None if fixed else DataCollatorWithPadding(gpt2_tokenizer(context_length))
    return TokenizedData(tokenized, padding, limit if fixed else None, truncated, collator)


def describe(splits: DatasetDict, tokenized: TokenizedData | None = None, batch_size: int = 8) -> str:
    """The numbers the chapter prints: class counts, split sizes, longest sequence, batches of ``batch_size``."""
    lines = []
    for name, split in splits.items():
        drop_last = name == "train"
        batches = len(split) // batch_size if drop_last else -(-len(split) // batch_size)
        row = f"{name}: {len(split)} rows ({_label_summary(split)}), {batches} batches of {batch_size}"
        if tokenized is not None:
            lengths = (
                [sum(m) for m in tokenized.splits[name]["attention_mask"]]
                if "attention_mask" in tokenized.splits[name].column_names
                else [len(x) for x in tokenized.splits[name]["input_ids"]]
            )
            row += f", longest {max(lengths)} tokens, truncated {tokenized.truncated.get(name, 0)}"
        lines.append(row + (" (drop_last)" if drop_last else ""))
    lines.append(duplicate_report(splits))
    if tokenized is not None:
        lines.append(f"padding: {tokenized.padding}" + (f" to {tokenized.max_length} tokens" if tokenized.max_length else ""))
    return "\n".join(lines)


def _label_summary(split: Dataset) -> str:
    """Rows per class (single-label), per class set (multi-label), or the targets' range (regression)."""
    feature = split.features["label"]
    if isinstance(feature, ClassLabel):
        counts = Counter(split["label"])
        return ", ".join(f"{feature.names[k]} {counts[k]}" for k in sorted(counts))
    values = np.asarray(split["label"], dtype=np.float64)
    if values.ndim == 2 and set(np.unique(values)) <= {0.0, 1.0}:
        return "rows with each class: " + " ".join(str(int(n)) for n in values.sum(0))
    return f"targets from {values.min():.4g} to {values.max():.4g}, mean {values.mean():.4g}"


def cross_split_duplicates(splits: DatasetDict) -> dict[str, int]:
    """Per split other than train: how many of its distinct texts also occur in the training split."""
    train = set(splits["train"]["text"]) if "train" in splits else set()
    return {name: sum(t in train for t in set(split["text"])) for name, split in splits.items() if name != "train"}


def duplicate_report(splits: DatasetDict) -> str:
    """Repeated texts are kept (as the book keeps them); say how many, and how many cross splits."""
    within = {name: len(split) - len(set(split["text"])) for name, split in splits.items()}
    return (
        "duplicate texts kept (as the book does): "
        + ", ".join(f"{name} {count} repeats" for name, count in within.items())
        + "; also in train: "
        + ", ".join(f"{name} {count}" for name, count in cross_split_duplicates(splits).items())
    )
