"""Multi-label F1 (micro and macro), exact match and per-class figures as one local ``evaluate`` module.

Shipped inside hf_spam because ``evaluate.load("f1", "multilabel")`` needs the Hub. Load it with
``hf_spam.training.evaluation.load_metric("multi_label")``. Predictions and references are 0/1 vectors over the
classes. Micro-averaged F1 pools every (row, class) decision; macro-averaged F1 is the unweighted mean
of the classes' F1; exact match is the share of rows whose whole set of classes is right.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Multi-label micro/macro F1, precision, recall, exact match and per-class F1."
_INPUTS = """
Args:
    predictions (list of lists of 0/1): predicted classes per row.
    references (list of lists of 0/1): true classes per row.
Returns:
    f1_micro, f1_macro, precision_micro, recall_micro, exact_match, accuracy (share of right
    (row, class) decisions) as floats; f1_per_class, precision_per_class, recall_per_class (lists).
"""


def _f1(true_positive, predicted, actual):
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive, dtype=float), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive, dtype=float), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=(precision + recall) > 0)
    return precision, recall, f1


class MultiLabel(evaluate.Metric):
    def _info(self):
        vector = datasets.Sequence(datasets.Value("int64"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": vector, "references": vector}),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions, dtype=bool), np.asarray(references, dtype=bool)
        true_positive = (predictions & references).sum(0).astype(float)
        predicted, actual = predictions.sum(0).astype(float), references.sum(0).astype(float)
        precision, recall, f1 = _f1(true_positive, predicted, actual)
        micro_precision, micro_recall, micro_f1 = _f1(true_positive.sum(), predicted.sum(), actual.sum())
        return {
            "f1_micro": float(micro_f1),
            "f1_macro": float(f1.mean()),
            "precision_micro": float(micro_precision),
            "recall_micro": float(micro_recall),
            "exact_match": float((predictions == references).all(1).mean()),
            "accuracy": float((predictions == references).mean()),
            "f1_per_class": f1.tolist(),
            "precision_per_class": precision.tolist(),
            "recall_per_class": recall.tolist(),
        }
