"""Accuracy, precision, recall, F1 and the confusion matrix as one local ``evaluate`` module.

Shipped inside hf_spam because ``evaluate.load("accuracy")`` needs the Hub. Load it with
``hf_spam.training.evaluation.load_metric()`` (``evaluate.load`` on this folder). Precision/recall/F1 are for
the positive class (id 1, e.g. spam) with two classes and macro-averaged (the unweighted mean over
classes) with more; ``average`` says which, and the ``*_per_class`` lists give every class's value.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy, precision, recall, F1 (binary for 2 classes, macro otherwise) and the confusion matrix."
_INPUTS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    num_labels (int, optional): number of classes (default: inferred from the data).
Returns:
    accuracy, precision, recall, f1 (floats); average ("binary" or "macro"); precision_per_class,
    recall_per_class, f1_per_class (lists indexed by class id); confusion_matrix (rows: true class, columns: predicted).
"""


class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        n = num_labels or int(max(predictions.max(initial=0), references.max(initial=0)) + 1)
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (references, predictions), 1)
        true_positive = np.diag(matrix).astype(float)
        predicted = matrix.sum(axis=0)
        actual = matrix.sum(axis=1)
        precision = np.divide(true_positive, predicted, out=np.zeros(n), where=predicted > 0)
        recall = np.divide(true_positive, actual, out=np.zeros(n), where=actual > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
        pick = (lambda values: float(values[1])) if n == 2 else (lambda values: float(values.mean()))
        return {
            "accuracy": float(true_positive.sum() / max(len(references), 1)),
            "precision": pick(precision),
            "recall": pick(recall),
            "f1": pick(f1),
            "average": "binary" if n == 2 else "macro",
            "precision_per_class": precision.tolist(),
            "recall_per_class": recall.tolist(),
            "f1_per_class": f1.tolist(),
            "confusion_matrix": matrix.tolist(),
        }
