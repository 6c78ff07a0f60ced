"""The SMS Spam Collection exactly as chapter 6 prepares it: downloaded once and checked by its sha256
(or read from a local copy), every line validated, balanced (listing 6.2) and split 70/10/20 (listing 6.3).

Sampling uses ``numpy.random.RandomState(seed)`` the way pandas' ``DataFrame.sample`` does, so the
balanced set and the split are row for row those of the book (a test runs the book's pandas code).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, DownloadConfig, DownloadManager, Features, Value

from ..errors import DataError

logger = logging.getLogger(__name__)


SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_MEMBER = "SMSSpamCollection"
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_LABELS = ("ham", "spam")


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
        failed = f"Could not download the SMS Spam Collection from {url} ({type(error).__name__}: {error})."
        raise DataError(
            f"{failed} Offline, pass a local copy: data_file=/path/to/SMSSpamCollection (or the UCI zip).",
            command_line=f"{failed} Offline, pass a local copy: --data_file path/to/SMSSpamCollection (or the UCI zip).",
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
        corrupt = (
            f"{name} (downloaded from {sms_spam_url(url)}) has sha256 {hashlib.sha256(raw).hexdigest()}, expected {SMS_SPAM_SHA256}: "
            "the download is corrupt or the file changed. Delete it and retry, or pass a local copy"
        )
        raise DataError(f"{corrupt} (data_file=).", command_line=f"{corrupt} (--data_file).")
    return raw, name


def load_sms_spam_frame(data_file: str | os.PathLike | None = None, url: str | None = None, cache_dir: str | None = None) -> pd.DataFrame:
    """The SMS Spam Collection as the book's DataFrame (``Label``, ``Text``), from a local file or UCI."""
    raw, name = fetch_sms_spam(url, cache_dir) if data_file is None else read_sms_spam_bytes(data_file)
    return parse_sms_spam(check_sms_lines(raw, name), name)


# the rows of chapter 6 (listings 6.2/6.3), or of its bonus experiments script (shuffled once more)
SMS_SPLITS = ("chapter", "bonus")


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
    if split not in SMS_SPLITS:
        raise ValueError(f"split must be one of {SMS_SPLITS}, got {split!r}.")
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
                f"The {name} split is empty ({len(dataset)} rows, fractions {train_frac}/{validation_frac}); use more data or "
                "other fractions."
            )
    return splits
