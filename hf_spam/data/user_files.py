"""The user's own text-classification data: their splits kept, only missing ones cut (the book's way),
bad rows reported or dropped by line, labels as classes, values or sets of classes (``targets``).
"""

from __future__ import annotations

import functools
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from ..errors import DataError
from ..models.gpt.configuration_gpt import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from .reading import RawSplit, read_file, read_splits
from .sms import balance_classes, split_like_the_book
from .targets import infer_problem_type, multi_label_targets, nfc, regression_targets

logger = logging.getLogger(__name__)

INVALID_ROWS = ("error", "drop")


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
        """Where the splits came from, one line per source (their rows and classes are ``describe``'s), and what was
        dropped."""
        sources: dict[str, list[str]] = {}
        for name in self.splits:
            sources.setdefault(self.origin.get(name, "given"), []).append(name)
        lines = [f"{', '.join(names)}: {origin}" for origin, names in sources.items()]
        for name, rows in self.dropped.items():
            if rows:
                lines.append(f"{name}: dropped {len(rows)} invalid rows ({', '.join(rows[:5])}{', ...' if len(rows) > 5 else ''})")
        return "\n".join(lines)


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
    read = functools.partial(read_file, text_column=text_column, label_columns=label_columns, quoting=quoting)
    raw, source = read_splits(path_or_id, train_file, validation_file, test_file, config_name, splits, text_column, read, encoding)
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
            raw[name] = RawSplit(part.dataset.select(keep), part.where, [part.row_names[i] for i in keep] if part.row_names else None)
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
    return ClassificationData(data, source, origin, dropped_rows, problem_type, names)


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip())


def _invalid_rows(part: RawSplit, text_column: str, label_columns: Sequence[str], invalid_rows: str) -> list[int]:
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
    raw: dict[str, RawSplit], text_column: str, label_column: str, label_names: list[str] | None, allow_unseen: bool
) -> DatasetDict:
    """Rename to ``text``/``label`` and make ``label`` one ``ClassLabel`` shared by every split.

    String labels keep their names (sorted, or in ``label_names``' order); integer labels are class ids
    named by ``label_names`` (default: the ids as strings). A class present outside the training
    split but not in it is an error unless ``allow_unseen``.
    """
    feature = raw[next(iter(raw))].dataset.features[label_column]
    values = sorted({nfc(v) for part in raw.values() for v in part.dataset[label_column]}, key=lambda v: (isinstance(v, str), v))
    label_names = [nfc(name) for name in label_names] if label_names else label_names
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
                f"Column {label_column!r} mixes values {values[:6]}: use class names, or class ids 0, 1, 2, ... (named with "
                "--label_names); "
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
            {"text": part.dataset[text_column], "label": [lookup[nfc(v)] for v in part.dataset[label_column]]}, features=features
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


def _warn_label_variants(raw: dict[str, RawSplit], label_column: str) -> None:
    """Labels written in several Unicode forms are read as one class (NFC), and said so; labels that differ only in
    case, compatibility forms or surrounding spaces (``spam``, ``spam ``, ``Spam``, ``ｓｐａｍ``) are separate
    classes, as given: almost always a typo, so say so with the row counts. Labels are shown with ``ascii()``,
    which makes invisible differences visible."""
    counts = Counter(v for part in raw.values() for v in part.dataset[label_column])
    forms: dict[str, list[str]] = {}
    for value in counts:
        forms.setdefault(nfc(value), []).append(value)
    for label, written in forms.items():
        if len(written) > 1:
            logger.warning(
                "Column %r writes the label %s in %d Unicode forms (%s); they are read as one class.",
                label_column,
                ascii(label),
                len(written),
                ", ".join(f"{ascii(v)} ({counts[v]} rows)" for v in written),
            )
    groups: dict[str, list[str]] = {}
    for label in forms:
        groups.setdefault(unicodedata.normalize("NFKC", label).strip().casefold(), []).append(label)
    for spellings in groups.values():
        if len(spellings) > 1:
            rows = {label: sum(counts[v] for v in forms[label]) for label in spellings}
            shown = ", ".join(f"{ascii(v)} ({rows[v]} rows)" for v in sorted(spellings, key=rows.get, reverse=True))
            logger.warning(
                "Column %r has labels that differ only in case, width or surrounding spaces: %s. They are separate classes; "
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
