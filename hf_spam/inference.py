"""The book's ``classify_review`` through ``pipeline("text-classification")``, for a saved folder or Hub id."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Pipeline, PreTrainedModel, pipeline

from .errors import DataError, ModelNotFoundError, OptionError, UnusableModelError
from .models.gpt.configuration_gpt import BOOK_PADDED_POOLINGS, MULTI_LABEL, REGRESSION

logger = logging.getLogger(__name__)


def load_classifier(model_name_or_path: str | os.PathLike, device: str | int | None = None) -> Pipeline:
    """A text-classification pipeline over an hf_spam (remote-code) or stock GPT-2 classifier.

    Refuses a folder whose files are not as saved (see ``model_checksums``) and one whose tokenizer does not
    produce the model's ids (another vocabulary would give valid-looking but meaningless ids).
    """
    classifier = _pipeline(str(model_name_or_path), device)
    vocab_size = classifier.model.config.vocab_size
    if len(classifier.tokenizer) != vocab_size or classifier.tokenizer.convert_tokens_to_ids("<|endoftext|>") != vocab_size - 1:
        raise UnusableModelError(
            f"{model_name_or_path}: the tokenizer ({type(classifier.tokenizer).__name__}, {len(classifier.tokenizer)} tokens) is "
            "not GPT-2's "
            f"{vocab_size}-token BPE the model was trained with; save the model with hf_spam.save_with_tokenizer()."
        )
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
    try:  # loaded here rather than by pipeline(), which turns a load's error into a ValueError holding every traceback
        model = AutoModelForSequenceClassification.from_pretrained(name, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=True)
    except OSError as error:
        if Path(name).exists():  # the folder's own files: damaged, edited, or not a model's
            raise UnusableModelError(" ".join(str(error).split())) from error
        raise ModelNotFoundError(
            f"{name}: no such folder here, and no Hub model of that id could be loaded ({str(error).splitlines()[0]}). "
            "Give the folder hf-spam train wrote, or the id of a model on the Hub (user/name; offline, one in the local Hub cache)."
        ) from error
    return pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None, device=device)


def token_limit(config) -> int:
    """How many tokens of a text the model reads, as training read them: the training pad length for a
    ``pooling="last"`` model trained on fixed-length padding (the book's ``classify_review`` cuts there too),
    else the length training cut texts to, else the context length. The model itself cuts (and pads) its
    input the same way (``GPTForSequenceClassification.as_trained``)."""
    padded_length = getattr(config, "padded_length", None)
    if getattr(config, "pooling", None) in BOOK_PADDED_POOLINGS and padded_length:
        return padded_length
    return getattr(config, "truncation_length", None) or getattr(config, "context_length", None) or getattr(config, "n_positions", 1024)


def scores_of(logits: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """What a classifier's logits mean, as ``pipeline("text-classification")`` reads them: class
    probabilities (softmax), per-class probabilities of a multi-label model (sigmoid), or a regression
    model's values as they are."""
    if problem_type == REGRESSION:
        return logits.float()
    if problem_type == MULTI_LABEL:
        return logits.float().sigmoid()
    return logits.float().softmax(-1)


@torch.inference_mode()
def predict_proba(model: PreTrainedModel, tokenizer, texts: list[str], batch_size: int = 32, max_length: int | None = None) -> torch.Tensor:
    """Scores (n, num_labels) (:func:`scores_of`: class probabilities, or values for regression), in
    length-sorted batches so padding stays small.

    The same numbers as ``pipeline("text-classification")`` (a test checks), without its per-text
    Python overhead and with far less padding. Texts are cut to ``max_length`` tokens (default: :func:`token_limit`).
    """
    texts = list(texts)  # e.g. a datasets Column
    limit = max_length or token_limit(model.config)
    encoded = tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    encoded = [ids or [tokenizer.eos_token_id] for ids in encoded]  # an empty text is read as <|endoftext|> alone
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    probs = torch.empty(len(texts), model.config.num_labels)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, padding=True, return_tensors="pt")
        logits = model(**batch.to(device)).logits
        probs[rows] = scores_of(logits, model.config.problem_type).cpu()
    return probs


def classify(classifier: Pipeline, texts: list[str], batch_size: int = 32, threshold: float | None = None) -> list[dict]:
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
            raise TypeError(f"Text {index} is {type(text).__name__}, not str; pass strings (empty strings are fine).")
    limit = token_limit(classifier.model.config)
    for index, text in enumerate(texts):
        length = len(classifier.tokenizer(text)["input_ids"])
        if length > limit:
            logger.warning("Text %d has %d tokens; only its first %d are classified.", index, length, limit)
    probs = predict_proba(classifier.model.eval(), classifier.tokenizer, texts, batch_size, limit)
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
    """One text per line of a file (see :func:`split_lines`)."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"--file {path} {state}: give a UTF-8 text file with one text per line.")
    return split_lines(path.read_bytes(), str(path))


def split_lines(raw: bytes, name: str) -> list[str]:
    """One text per line: split at ``\\n`` only (a CRLF's ``\\r`` dropped), as an editor numbers lines, so a
    form feed, U+0085 or U+2028 inside a message stays in it. Bytes that are not UTF-8 become U+FFFD, and
    the lines affected are reported."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    texts, damaged = [], []
    for number, line in enumerate(lines, start=1):
        text = line.removesuffix(b"\r").decode("utf-8", errors="replace")
        if "\ufffd" in text and "\ufffd".encode() not in line:
            damaged.append(number)
        texts.append(text)
    if damaged:
        logger.warning("%s: lines %s are not valid UTF-8; undecodable bytes were replaced by U+FFFD.", name, damaged[:20])
    return texts
