"""The numbers a classifier gives for texts, whatever runs it (a PyTorch model, or an export on its runtime): the
tokens it reads, its scores, computed in length-sorted batches."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ..errors import UnusableModelError
from ..models.gpt.configuration_gpt import MULTI_LABEL, REGRESSION


def check_tokenizer(name, tokenizer, config) -> None:
    """The tokenizer must be GPT-2's BPE of the model's vocabulary size."""
    vocab_size = config.vocab_size
    if len(tokenizer) != vocab_size or tokenizer.convert_tokens_to_ids("<|endoftext|>") != vocab_size - 1:
        raise UnusableModelError(
            f"{name}: the tokenizer ({type(tokenizer).__name__}, {len(tokenizer)} tokens) is not GPT-2's "
            f"{vocab_size}-token BPE the model was trained with; save the model with hf_spam.save_with_tokenizer()."
        )


def token_limit(config) -> int:
    """How many tokens of a text the model reads: ``GPTConfig.token_limit`` (as training read them), else, for a model
    of another kind, its position embedding's length."""
    return getattr(config, "token_limit", None) or getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024)


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
    length-sorted batches so padding stays small, back in the texts' order. ``model`` is a PreTrainedModel or an
    exported one (``transformers.exporters.ExportedModel``): both are called with ``input_ids`` and ``attention_mask``.

    The same numbers as ``pipeline("text-classification")`` (a test checks), without its per-text
    Python overhead and with far less padding. Texts are cut to ``max_length`` tokens (default: :func:`token_limit`).
    """
    texts = list(texts)  # e.g. a datasets Column
    limit = max_length or token_limit(model.config)
    encoded = tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    encoded = [ids or [tokenizer.eos_token_id] for ids in encoded]  # an empty text is read as <|endoftext|> alone
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    probs = torch.empty(len(texts), model.config.num_labels)
    device = model.device  # a PreTrainedModel's, or an exported model's runtime device
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, padding=True, return_tensors="pt")
        logits = model(**batch.to(device)).logits
        probs[rows] = scores_of(logits, model.config.problem_type).cpu()
    check_finite(probs, model)
    return probs


def check_finite(scores: torch.Tensor, model) -> None:
    """A NaN or infinite score is never an answer: it comes from damaged weights (or an overflow), and a file of
    ``NaN`` scores, or a label chosen among them, would pass for a result."""
    broken = int((~torch.isfinite(scores)).any(-1).sum())
    if broken:
        name = getattr(model.config, "_name_or_path", None) or "the model"
        raise UnusableModelError(
            f"{name}: the model computed NaN or infinite scores for {broken} of {len(scores)} texts, "
            "so its weights are damaged or overflow; restore the folder from where it was saved, or train it again."
        )
