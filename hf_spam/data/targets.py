"""Regression and multi-label targets: the labels of transformers' two other ``problem_type``s.

Single-label classes are a ``ClassLabel`` (``data.py``). Here a regression target is the float in
each label column (``label`` a float, or a list of floats for several columns), and a multi-label
target is a 0/1 vector over the classes (``label`` a list of floats, as ``BCEWithLogitsLoss`` takes
it), read from one column holding each row's list of class names, or from several 0/1 columns, one
per class, named for it. Every error names the file, the row as the user's editor counts it, and the
user's column.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections.abc import Sequence

from datasets import Dataset, DatasetDict, Features, Value
from datasets import Sequence as SequenceFeature

from ..errors import DataError
from ..models.gpt.configuration_gpt import MULTI_LABEL, PROBLEM_TYPES, SINGLE_LABEL

logger = logging.getLogger(__name__)


def nfc(value):
    """A string label in Unicode's composed form (NFC): ``späm`` typed as one character or as ``a`` plus a combining
    diaeresis is one class. Anything else as it is."""
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


def infer_problem_type(problem_type: str | None, raw: dict, label_columns: Sequence[str]) -> str:
    """``problem_type`` as given, else multi-label for several label columns or a column of lists, else
    single-label (numbers are class ids unless ``--problem_type regression`` says they are values)."""
    if problem_type is not None:
        if problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}.")
        if problem_type == SINGLE_LABEL and len(label_columns) > 1:
            raise DataError(
                f"--label_column names {len(label_columns)} columns {list(label_columns)}: one per class is multi-label "
                "(--problem_type multi_label_classification), several values per row is regression (--problem_type regression)."
            )
        return problem_type
    if len(label_columns) > 1:
        return MULTI_LABEL
    part = next(iter(raw.values()))
    feature = part.dataset.features[label_columns[0]]
    return MULTI_LABEL if isinstance(feature, (SequenceFeature, list)) else SINGLE_LABEL


def _number(value, part, index: int, column: str, what: str) -> float:
    """``value`` as a float, or an error naming the file, the row and the column."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise DataError(f"{part.where} {part.row_name(index)}: column {column!r} holds {value!r}, not {what}.")
    return number


def regression_targets(raw: dict, text_column: str, label_columns: Sequence[str]) -> tuple[DatasetDict, list[str]]:
    """``text``/``label`` splits with float targets, and the target names (the label columns)."""
    several = len(label_columns) > 1
    label = SequenceFeature(Value("float32"), length=len(label_columns)) if several else Value("float32")
    features = Features({"text": Value("string"), "label": label})
    data = DatasetDict()
    for name, part in raw.items():
        columns = [part.dataset[c] for c in label_columns]
        targets = [
            [_number(v, part, i, c, "a number") for c, v in zip(label_columns, row, strict=True)]
            for i, row in enumerate(zip(*columns, strict=True))
        ]
        data[name] = Dataset.from_dict(
            {"text": part.dataset[text_column], "label": targets if several else [t[0] for t in targets]}, features=features
        )
    if "train" in data:
        train = raw["train"]
        for position, column in enumerate(label_columns):
            values = {row[position] if several else row for row in data["train"]["label"]}
            if len(values) < 2:
                raise DataError(
                    f"{train.where}: column {column!r} has the value {values.pop()!r} in every training row; there is nothing to learn."
                )
    return data, list(label_columns)


def multi_label_targets(
    raw: dict, text_column: str, label_columns: Sequence[str], label_names: list[str] | None, allow_unseen: bool
) -> tuple[DatasetDict, list[str]]:
    """``text``/``label`` splits with 0/1 vectors over the classes, and the class names.

    From several columns: each a class (named by the column, or by ``label_names``), holding 0/1 (or
    true/false). From one column: each row's list of class names (sorted, or in ``label_names``' order),
    or of class ids named by ``label_names``; an empty list is a row of no class.
    """
    if len(label_columns) > 1:
        names = list(label_names) if label_names else list(label_columns)
        if len(names) != len(label_columns):
            raise DataError(f"--label_names gives {len(names)} names for the {len(label_columns)} label columns {list(label_columns)}.")
        vectors = {name: _vectors_from_columns(part, label_columns) for name, part in raw.items()}
    else:
        names, vectors = _vectors_from_lists(raw, label_columns[0], label_names)
    features = Features({"text": Value("string"), "label": SequenceFeature(Value("float32"), length=len(names))})
    data = DatasetDict(
        {
            name: Dataset.from_dict({"text": part.dataset[text_column], "label": vectors[name]}, features=features)
            for name, part in raw.items()
        }
    )
    if "train" in data:
        never = [names[k] for k in range(len(names)) if not any(row[k] for row in vectors["train"])]
        if never:
            message = f"{raw['train'].where}: classes {never} are never set in the training data."
            if not allow_unseen:
                raise DataError(message + " The model could not learn them; fix the data or pass --allow_unseen_labels.")
            logger.warning(message)
    return data, names


def _vectors_from_columns(part, label_columns: Sequence[str]) -> list[list[float]]:
    vectors = []
    columns = [part.dataset[c] for c in label_columns]
    for index, row in enumerate(zip(*columns, strict=True)):
        vector = [_number(v, part, index, c, "0 or 1") for c, v in zip(label_columns, row, strict=True)]
        bad = next((c for c, v in zip(label_columns, vector, strict=True) if v not in (0.0, 1.0)), None)
        if bad is not None:
            raise DataError(f"{part.where} {part.row_name(index)}: column {bad!r} holds {row[label_columns.index(bad)]!r}, not 0 or 1.")
        vectors.append(vector)
    return vectors


def _vectors_from_lists(raw: dict, column: str, label_names: list[str] | None) -> tuple[list[str], dict[str, list[list[float]]]]:
    for part in raw.values():
        for index, value in enumerate(part.dataset[column]):
            if not isinstance(value, list):
                raise DataError(
                    f"{part.where} {part.row_name(index)}: column {column!r} holds {value!r}, not a list of classes. A multi-label "
                    "column holds each row's list (JSON/JSONL/Parquet); in a CSV, give one 0/1 column per class (--label_column a b c)."
                )
    values = {nfc(v) for part in raw.values() for row in part.dataset[column] for v in row}
    if all(isinstance(v, str) for v in values):
        names = [nfc(name) for name in label_names] if label_names else sorted(values)
        unknown = sorted(values - set(names))
        if unknown:
            raise DataError(f"Labels {unknown[:5]} of column {column!r} are not in --label_names {names}.")
        lookup = {name: k for k, name in enumerate(names)}
    elif all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        count = max(values, default=-1) + 1
        names = list(label_names) if label_names else [str(k) for k in range(count)]
        if len(names) < count:
            raise DataError(f"Column {column!r} has class id {count - 1} but --label_names names only {len(names)} classes: {names}.")
        lookup = {k: k for k in range(len(names))}
    else:
        raise DataError(
            f"Column {column!r} mixes values {sorted(map(repr, values))[:6]}: use lists of class names, or of class ids 0, 1, 2, ..."
        )
    vectors = {}
    for name, part in raw.items():
        rows = []
        for row in part.dataset[column]:
            vector = [0.0] * len(names)
            for value in row:
                vector[lookup[nfc(value)]] = 1.0
            rows.append(vector)
        vectors[name] = rows
    return names, vectors
