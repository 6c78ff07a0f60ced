"""The book's ``classify_review`` through ``pipeline("text-classification")``, for a saved folder or Hub id."""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Pipeline, pipeline

from ..errors import DataError, ModelNotFoundError, OptionError, UnusableModelError
from ..models.gpt.configuration_gpt import MULTI_LABEL, REGRESSION
from .predict import check_tokenizer, predict_proba, token_limit

logger = logging.getLogger(__name__)


def load_classifier(model_name_or_path: str | os.PathLike, device: str | int | None = None, backend: str | None = None) -> Pipeline:
    """A text-classification pipeline over an hf_spam (remote-code) or stock GPT-2 classifier, or over a folder
    ``hf-spam export`` wrote (an :class:`~hf_spam.serving.runtime.ExportedClassifier`, called the same way).

    ``backend`` (``torch``, ``onnx``, ``openvino``; default: the folder's) must be the folder's: a saved model runs on
    PyTorch, an export on its runtime. Refuses a folder whose files are not as saved (see ``model_checksums``) and
    one whose tokenizer does not produce the model's ids (another vocabulary would give valid-looking but
    meaningless ids).
    """
    from .runtime import backend_for, load_exported

    if backend_for(str(model_name_or_path), backend) != "torch":
        return load_exported(model_name_or_path, device)
    classifier = _pipeline(str(model_name_or_path), device)
    check_tokenizer(model_name_or_path, classifier.tokenizer, classifier.model.config)
    return classifier


HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _pipeline(name: str, device: str | int | None) -> Pipeline:
    """The pipeline, or an error that says whether ``name`` was taken as a folder or as a Hub id."""
    if not Path(name).exists() and not HUB_ID.match(name):
        raise ModelNotFoundError(
            f"{name}: no such folder. Give the folder hf-spam train wrote (its --output_dir), or a Hub model id of the form user/name."
        )
    if Path(name).exists() and not Path(name).is_dir():
        raise ModelNotFoundError(f"{name} is a file; give the folder hf-spam train wrote (its --output_dir), or a Hub id.")
    if Path(name).is_dir() and not (Path(name) / "config.json").is_file():
        raise UnusableModelError(
            f"{name} has no config.json: it is not a model folder. Give the folder hf-spam train wrote (its --output_dir)."
        )
    try:  # loaded here rather than by pipeline(), which turns a load's error into a ValueError holding every traceback
        model = AutoModelForSequenceClassification.from_pretrained(name, trust_remote_code=True)
        tokenizer = _tokenizer(name)
    except ValueError as error:  # transformers' "Unrecognized model in NAME": a repo or folder without a model's config
        if not str(error).startswith("Unrecognized model"):
            raise
        where = "folder" if Path(name).exists() else "Hub repo"
        raise UnusableModelError(
            f"{name}: this {where} holds no model config.json that transformers can read ({str(error).splitlines()[0]}). Give the "
            "folder hf-spam train wrote (its --output_dir), or the Hub id it pushed to (its --hub_model_id)."
        ) from error
    except OSError as error:
        if Path(name).exists():  # the folder's own files: damaged, edited, or not a model's
            raise UnusableModelError(" ".join(str(error).split())) from error
        raise ModelNotFoundError(
            f"{name}: no such folder here, and no Hub model of that id could be loaded ({str(error).splitlines()[0]}). "
            "Give the folder hf-spam train wrote, or the id of a model on the Hub (user/name; offline, one in the local Hub cache)."
        ) from error
    return pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None, device=device)


def _tokenizer(name: str):
    """The folder's tokenizer, or one line saying it has none that loads (transformers says "You need to have
    sentencepiece or tiktoken installed" for a folder without tokenizer files, and a JSON error for a cut one)."""
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=True)
    except ValueError as error:
        missing = Path(name).is_dir() and not (Path(name) / "tokenizer.json").is_file()
        why = "it has no tokenizer.json" if missing else str(error).strip().splitlines()[0][:160]
        raise UnusableModelError(
            f"{name}: its tokenizer could not be loaded ({why}). A folder hf-spam train wrote holds tokenizer.json and "
            "tokenizer_config.json: restore the folder from where it was saved, or save the model with hf_spam.save_with_tokenizer()."
        ) from error


def classify(
    classifier: Pipeline, texts: list[str], batch_size: int = 32, threshold: float | None = None, first_index: int = 0
) -> list[dict]:
    """One result per text, by the model's ``problem_type``:
    ``{"text", "label", "score", "scores"}`` for classes (``scores``: every class's probability);
    ``{"text", "labels", "scores"}`` for multi-label (``labels``: every class whose probability is above
    ``threshold``, most probable first; default: the model's, the ``--threshold`` its run was evaluated
    with); ``{"text", "values"}`` for regression (one per target)."""
    check_batch_size(batch_size)
    if threshold is None:
        threshold = getattr(classifier.model.config, "threshold", 0.5)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Text {first_index + index} is {type(text).__name__}, not str; pass strings (empty strings are fine).")
    limit = token_limit(classifier.model.config)
    for index, text in enumerate(texts):
        length = len(classifier.tokenizer(text)["input_ids"])
        if length > limit:
            logger.warning("Text %d has %d tokens; only its first %d are classified.", first_index + index, length, limit)
    if isinstance(classifier.model, torch.nn.Module):
        classifier.model.eval()
    probs = predict_proba(classifier.model, classifier.tokenizer, texts, batch_size, limit)
    id2label = classifier.model.config.id2label
    problem_type = classifier.model.config.problem_type
    results = []
    for text, row in zip(texts, probs.tolist(), strict=True):
        scores = {id2label[i]: p for i, p in enumerate(row)}
        if problem_type == REGRESSION:
            results.append({"text": text, "values": scores})
        elif problem_type == MULTI_LABEL:
            chosen = sorted((name for name, p in scores.items() if p > threshold), key=scores.get, reverse=True)
            results.append({"text": text, "labels": chosen, "scores": scores})
        else:
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"text": text, "label": id2label[best], "score": row[best], "scores": scores})
    return results


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"--batch_size {batch_size}: give a positive number of texts per batch (default 8).")


def summary(result: dict) -> str:
    """One result as a line's first columns: the label and its probability, the labels above the threshold
    (``-`` for none), or the values."""
    if "values" in result:
        return " ".join(f"{name}={value:.4g}" for name, value in result["values"].items())
    if "labels" in result:
        return ",".join(result["labels"]) or "-"
    return f"{result['label']}\t{result['score']:.4f}"


def read_text_file(path: str | os.PathLike) -> list[str]:
    """One text per line of a file (see :func:`read_lines`)."""
    with open_text_file(path) as handle:
        return list(read_lines(handle, str(path)))


def open_text_file(path: str | os.PathLike):
    """The file, opened for :func:`read_lines`, or an error naming ``--file``."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"--file {path} {state}: give a UTF-8 text file with one text per line.")
    return open(path, "rb")


def split_lines(raw: bytes, name: str) -> list[str]:
    """:func:`read_lines` of bytes already read."""
    return list(read_lines(io.BytesIO(raw), name))


def check_not_utf16_or_32(first_line: bytes, name: str) -> None:
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if first_line.startswith(bom):
            raise DataError(
                f"{name} is {encoding} text (its first bytes are {encoding}'s byte-order mark); texts are read as UTF-8, one per "
                f"line. Convert it first, e.g. iconv -f {encoding} -t UTF-8 {name} > {name}.utf8.txt"
            )


def read_lines(handle, name: str) -> Iterator[str]:
    """One text per line of a binary file, read as it goes: split at ``\\n`` only (a CRLF's ``\\r`` dropped), as an
    editor numbers lines, so a form feed, U+0085 or U+2028 inside a message stays in it. Bytes that are not UTF-8
    become U+FFFD, and the lines affected are reported when the file has been read. A UTF-8 byte-order mark is
    dropped; a UTF-16/32 one, or a NUL byte (such text read as UTF-8 would be NUL-filled messages), is an error."""
    damaged = []
    for number, line in enumerate(handle, start=1):
        if number == 1:
            check_not_utf16_or_32(line, name)
            line = line.removeprefix(codecs.BOM_UTF8)
        if b"\0" in line:
            raise DataError(
                f"{name}: line {number} holds a NUL byte, which no text message has: the file is not UTF-8 text (UTF-16 "
                "without a byte-order mark?). Convert it to UTF-8, e.g. iconv -f UTF-16 -t UTF-8."
            )
        line = line.removesuffix(b"\n").removesuffix(b"\r")
        text = line.decode("utf-8", errors="replace")
        if "\ufffd" in text and "\ufffd".encode() not in line:
            damaged.append(number)
        yield text
    if damaged:
        logger.warning("%s: lines %s are not valid UTF-8; undecodable bytes were replaced by U+FFFD.", name, damaged[:20])
