"""The book's ``classify_review`` through ``pipeline("text-classification")``, for a saved folder or Hub id."""

from __future__ import annotations

import logging
import os

from transformers import Pipeline, pipeline

logger = logging.getLogger(__name__)


def load_classifier(model_name_or_path: str | os.PathLike, device: str | int | None = None) -> Pipeline:
    """A text-classification pipeline over an hf_spam (remote-code) or stock GPT-2 classifier."""
    return pipeline("text-classification", model=str(model_name_or_path), trust_remote_code=True, top_k=None, device=device)


def tokenizer_kwargs(classifier: Pipeline) -> dict:
    """Truncate to the context; a model trained on fixed-length padding sees the same padding here.

    That matters for ``pooling="last"`` (the book): position -1 is a pad token after padding to the
    training length, exactly as the book's ``classify_review`` pads to ``train_dataset.max_length``.
    """
    config = classifier.model.config
    context_length = getattr(config, "context_length", None) or getattr(config, "n_positions", 1024)
    padded_length = getattr(config, "padded_length", None)
    if getattr(config, "pooling", None) == "last" and padded_length:
        return {"truncation": True, "padding": "max_length", "max_length": padded_length}
    return {"truncation": True, "max_length": context_length}


def classify(classifier: Pipeline, texts: list[str], batch_size: int = 8) -> list[dict]:
    """One ``{"text", "label", "score", "scores"}`` per text; ``scores`` holds every class's probability."""
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Text {index} is {type(text).__name__}, not str; pass strings (empty strings are fine).")
    kwargs = tokenizer_kwargs(classifier)
    limit = kwargs["max_length"]
    for index, text in enumerate(texts):
        length = len(classifier.tokenizer(text)["input_ids"])
        if length > limit:
            logger.warning("Text %d has %d tokens; only its first %d are classified.", index, length, limit)
    outputs = classifier(texts, batch_size=batch_size, **kwargs)
    results = []
    for text, scores in zip(texts, outputs, strict=True):
        best = max(scores, key=lambda s: s["score"])
        results.append({"text": text, "label": best["label"], "score": best["score"], "scores": {s["label"]: s["score"] for s in scores}})
    return results
