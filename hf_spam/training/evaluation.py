"""The figures of a run: hf_spam's local ``evaluate`` modules (``metrics/``: ``evaluate.load("accuracy")`` would
need the Hub), what a classifier predicts from its logits for each problem type, and Trainer's ``compute_metrics``."""

from __future__ import annotations

from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction

from ..models.gpt.configuration_gpt import MULTI_LABEL, REGRESSION, SINGLE_LABEL

METRICS = Path(__file__).parent / "metrics"


def load_metric(name: str = "classification", config_name: str | None = None) -> evaluate.EvaluationModule:
    """One of the package's local evaluate modules (``evaluate.load("accuracy")`` would need the Hub):
    ``classification`` (single-label), ``regression`` (``config_name="multiple"`` for several targets)
    or ``multi_label``."""
    return evaluate.load(str(METRICS / name), config_name)


def metric_for(problem_type: str, num_labels: int) -> evaluate.EvaluationModule:
    """The metric module of ``problem_type``."""
    if problem_type == REGRESSION:
        return load_metric("regression", "multiple" if num_labels > 1 else None)
    return load_metric("multi_label" if problem_type == MULTI_LABEL else "classification")


def predictions_of(logits: np.ndarray, problem_type: str, threshold: float = 0.5) -> np.ndarray:
    """What the model predicts from its logits: the class with the largest logit (single-label), the values
    themselves (regression), every class whose probability ``sigmoid(logit)`` is above ``threshold`` (multi-label)."""
    if problem_type == REGRESSION:
        return logits[:, 0] if logits.shape[1] == 1 else logits
    if problem_type == MULTI_LABEL:
        return (1 / (1 + np.exp(-logits.astype(np.float64))) > threshold).astype(np.int64)
    return np.argmax(logits, axis=-1)


def metric_results(
    metric: evaluate.EvaluationModule,
    logits: np.ndarray,
    references: np.ndarray,
    problem_type: str,
    num_labels: int,
    threshold: float = 0.5,
) -> dict:
    """Every figure ``metric`` (:func:`metric_for` the problem type) gives for these logits and labels."""
    extra = {"num_labels": num_labels} if problem_type == SINGLE_LABEL else {}
    if problem_type == MULTI_LABEL:
        references = references.astype(np.int64)  # BCE's float targets, as the module's 0/1 vectors
    return metric.compute(predictions=predictions_of(logits, problem_type, threshold), references=references, **extra)


def make_compute_metrics(num_labels: int, problem_type: str = SINGLE_LABEL, threshold: float = 0.5):
    """``compute_metrics`` for Trainer: the scalar metrics (Trainer logs scalars; per-class lists stay out)."""
    metric = metric_for(problem_type, num_labels)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        results = metric_results(metric, logits, prediction.label_ids, problem_type, num_labels, threshold)
        return {k: v for k, v in results.items() if isinstance(v, float)}

    return compute_metrics
