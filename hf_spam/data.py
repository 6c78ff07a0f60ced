"""Chapter 6's data as ``datasets``: the SMS Spam Collection prepared exactly as the book, any other
text-classification data through the same balancing and splitting, and GPT-2 tokenization with the
book's padding choices.

Sampling uses ``numpy.random.RandomState(seed)`` the way pandas' ``DataFrame.sample`` does, so the
balanced set and the 70/10/20 split are row for row those of the book's listings 6.2 and 6.3 (a test
runs the book's pandas code as the reference).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, DownloadConfig, DownloadManager, Features, Value, load_dataset
from transformers import DataCollatorWithPadding

from .tokenizer import END_OF_TEXT, gpt2_tokenizer, tiktoken_gpt2

logger = logging.getLogger(__name__)

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_MEMBER = "SMSSpamCollection"
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_LABELS = ("ham", "spam")
PADDINGS = ("longest_train", "max_length", "dynamic", "none")
LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """Bad input data: the message names the file, line or field, and what to do."""


# ---------------------------------------------------------------------------------------------
# The SMS Spam Collection


def download_sms_spam(url: str = SMS_SPAM_URL, cache_dir: str | None = None) -> Path:
    """The UCI zip, downloaded once into the datasets cache (later calls make no network request)."""
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


def load_sms_spam_frame(data_file: str | os.PathLike | None = None, url: str = SMS_SPAM_URL, cache_dir: str | None = None) -> pd.DataFrame:
    """The SMS Spam Collection as the book's DataFrame (``Label``, ``Text``), from a local file or UCI."""
    downloaded = data_file is None
    raw, name = read_sms_spam_bytes(download_sms_spam(url, cache_dir) if downloaded else data_file)
    if downloaded and hashlib.sha256(raw).hexdigest() != SMS_SPAM_SHA256:
        raise DataError(
            f"{name} (downloaded from {url}) has sha256 {hashlib.sha256(raw).hexdigest()}, expected {SMS_SPAM_SHA256}: "
            "the download is corrupt or the file changed. Delete it and retry, or pass data_file=."
        )
    return parse_sms_spam(check_sms_lines(raw, name), name)


def load_sms_spam(
    data_file: str | os.PathLike | None = None,
    *,
    balance: bool = True,
    seed: int = 123,
    train_frac: float = 0.7,
    validation_frac: float = 0.1,
    url: str = SMS_SPAM_URL,
    cache_dir: str | None = None,
) -> DatasetDict:
    """Chapter 6's SMS data: balanced 747/747 (seed 123), split 70/10/20 -> 1,045 / 149 / 300 rows.

    ``data_file`` is the extracted ``SMSSpamCollection`` or the UCI zip; without it the zip is
    downloaded once into the datasets cache. Columns: ``text`` and ``label`` (``ClassLabel`` ham=0, spam=1).
    """
    frame = load_sms_spam_frame(data_file, url, cache_dir)
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(SMS_LABELS))})
    dataset = Dataset.from_dict({"text": frame["Text"].tolist(), "label": [SMS_LABELS.index(x) for x in frame["Label"]]}, features=features)
    if balance:
        dataset = balance_classes(dataset, seed)
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


def load_text_classification(
    path_or_id: str | os.PathLike,
    *,
    text_column: str = "text",
    label_column: str = "label",
    config_name: str | None = None,
    balance: bool = False,
    seed: int = 123,
    train_frac: float = 0.7,
    validation_frac: float = 0.1,
) -> DatasetDict:
    """A Hub dataset id or local CSV/TSV/JSON(L)/Parquet file(s) as ``text``/``label`` splits.

    A local folder holding ``train.*`` (and optionally ``validation.*``, ``test.*``) gives those splits;
    any other files are read as one training set.

    String labels become a ``ClassLabel`` (names sorted), whose names flow into the model's
    ``id2label``. Missing splits are made with the book's procedure: no splits at all -> 70/10/20; a
    train split without validation -> validation cut from train.
    """
    loaded = _load_any(path_or_id, config_name)
    for split_name, split in loaded.items():
        for column in (text_column, label_column):
            if column not in split.column_names:
                raise DataError(
                    f"{path_or_id} ({split_name} split) has no column {column!r}; its columns are {split.column_names}. Set text_column/label_column."
                )
    loaded = DatasetDict({k: v.select_columns([text_column, label_column]) for k, v in loaded.items()})
    if text_column != "text":
        loaded = loaded.rename_column(text_column, "text")
    if label_column != "label":
        loaded = loaded.rename_column(label_column, "label")
    loaded = _as_class_labels(loaded, str(path_or_id))
    for split_name, split in loaded.items():
        _check_rows(split, f"{path_or_id} ({split_name} split)")
    train_labels = set(loaded["train"]["label"]) if "train" in loaded else set()
    names = next(iter(loaded.values())).features["label"].names
    for split_name, split in loaded.items():
        unseen = sorted(set(split["label"]) - train_labels) if split_name != "train" and train_labels else []
        if unseen:
            logger.warning("%s: the %s split has classes with no training example: %s.", path_or_id, split_name, [names[i] for i in unseen])
    if "train" not in loaded:
        if len(loaded) != 1:
            raise DataError(f"{path_or_id} has splits {list(loaded)} but no 'train'.")
        loaded = DatasetDict(train=next(iter(loaded.values())))
    if balance:
        loaded["train"] = balance_classes(loaded["train"], seed)
    if "validation" not in loaded and "test" not in loaded:
        return split_like_the_book(loaded["train"], train_frac, validation_frac, seed)
    if "validation" not in loaded:
        cut = loaded["train"].train_test_split(
            test_size=validation_frac / (train_frac + validation_frac), seed=seed, stratify_by_column="label"
        )
        loaded["train"], loaded["validation"] = cut["train"], cut["test"]
    return DatasetDict({k: loaded[k] for k in ("train", "validation", "test") if k in loaded})


def _load_any(path_or_id: str | os.PathLike, config_name: str | None) -> DatasetDict:
    path = Path(path_or_id)
    if path.exists():
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        suffixes = {f.suffix.lower() for f in files if f.suffix.lower() in LOCAL_FORMATS}
        if len(suffixes) != 1:
            raise DataError(f"{path}: expected files of one of {sorted(LOCAL_FORMATS)}, found {sorted(f.name for f in files)[:10]}.")
        suffix = suffixes.pop()
        data_files = [f for f in files if f.suffix.lower() == suffix]
        by_split = {f.stem: str(f) for f in data_files}
        named = set(by_split) <= {"train", "validation", "test"} and "train" in by_split
        kwargs = {"sep": "\t"} if suffix == ".tsv" else {}
        return load_dataset(LOCAL_FORMATS[suffix], data_files=by_split if named else {"train": [str(f) for f in data_files]}, **kwargs)
    try:
        return load_dataset(str(path_or_id), config_name)
    except Exception as error:
        raise DataError(
            f"Could not load dataset {path_or_id!r} ({type(error).__name__}: {error}); offline, pass local CSV/TSV/JSON(L)/Parquet files."
        ) from error


def _as_class_labels(splits: DatasetDict, name: str) -> DatasetDict:
    """String or integer labels -> one ``ClassLabel`` shared by every split (names from all splits)."""
    feature = next(iter(splits.values())).features["label"]
    if isinstance(feature, ClassLabel):
        return splits
    values = sorted({v for split in splits.values() for v in split["label"] if v is not None}, key=str)
    if any(isinstance(v, float) and not float(v).is_integer() for v in values):
        raise DataError(f"{name}: label column holds non-integer numbers {values[:5]}; classification needs class names or ids.")
    names = [str(v) for v in values]
    class_label = ClassLabel(names=names)
    lookup = {v: i for i, v in enumerate(values)}
    return DatasetDict(
        {
            k: v.map(
                lambda row: {"label": lookup.get(row["label"], -1)}, features=Features({"text": v.features["text"], "label": class_label})
            )
            for k, v in splits.items()
        }
    )


def _check_rows(split: Dataset, name: str) -> None:
    """Every row needs a non-empty text and a known label; name the first row that has not."""
    for index, (text, label) in enumerate(zip(split["text"], split["label"], strict=True)):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{name} row {index}: column 'text' is empty or missing ({text!r}); remove the row or fill it.")
        if label is None or label < 0:
            raise DataError(f"{name} row {index}: column 'label' is missing.")


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
    encoding = tiktoken_gpt2()
    pad_id = encoding.eot_token

    def encode(batch: dict) -> dict:
        return {"input_ids": encoding.encode_batch(batch["text"], allowed_special={END_OF_TEXT})}

    encoded = splits.map(encode, batched=True, desc="Tokenizing")
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
    names = splits["train"].features["label"].names
    lines = []
    for name, split in splits.items():
        counts = Counter(split["label"])
        drop_last = name == "train"
        batches = len(split) // batch_size if drop_last else -(-len(split) // batch_size)
        row = (
            f"{name}: {len(split)} rows ({', '.join(f'{names[k]} {counts[k]}' for k in sorted(counts))}), {batches} batches of {batch_size}"
        )
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


def duplicate_report(splits: DatasetDict) -> str:
    """Repeated texts are kept (as the book keeps them); say how many, and how many cross splits."""
    texts = {name: split["text"] for name, split in splits.items()}
    within = {name: len(values) - len(set(values)) for name, values in texts.items()}
    train = set(texts.get("train", []))
    leaked = {name: sum(t in train for t in set(values)) for name, values in texts.items() if name != "train"}
    return (
        "duplicate texts kept (as the book does): "
        + ", ".join(f"{name} {count} repeats" for name, count in within.items())
        + "; also in train: "
        + ", ".join(f"{name} {count}" for name, count in leaked.items())
    )
