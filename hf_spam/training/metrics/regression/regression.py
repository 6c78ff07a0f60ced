"""Mean squared error, mean absolute error, Pearson's and Spearman's correlation as one local ``evaluate`` module.

Shipped inside hf_spam because ``evaluate.load("mse")`` and friends need the Hub. Load it with
``hf_spam.training.evaluation.load_metric("regression")``. With several targets per row every figure is the mean
over the targets, and the ``*_per_target`` lists give each target's value.
"""

import datasets
import evaluate
import numpy as np
import pandas as pd

_DESCRIPTION = "MSE, MAE, Pearson and Spearman correlation of predicted and true values."
_INPUTS = """
Args:
    predictions (list of float, or of lists of floats): predicted values.
    references (same shape): true values.
Returns:
    mse, mae, pearson, spearman (floats, the mean over targets); mse_per_target, mae_per_target,
    pearson_per_target, spearman_per_target (lists). A correlation is nan where a column is constant.
"""


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    scale = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / scale) if scale > 0 else float("nan")


class Regression(evaluate.Metric):
    def _info(self):
        if self.config_name == "multiple":
            value = datasets.Sequence(datasets.Value("float64"))
        else:
            value = datasets.Value("float64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions, dtype=np.float64).reshape(len(predictions), -1)
        references = np.asarray(references, dtype=np.float64).reshape(len(references), -1)
        error = predictions - references
        mse = (error**2).mean(0)
        mae = np.abs(error).mean(0)
        pearson = [_pearson(p, r) for p, r in zip(predictions.T, references.T, strict=True)]
        # Spearman: Pearson of the ranks, ties sharing their mean rank
        spearman = [
            _pearson(pd.Series(p).rank().to_numpy(), pd.Series(r).rank().to_numpy())
            for p, r in zip(predictions.T, references.T, strict=True)
        ]
        return {
            "mse": float(mse.mean()),
            "mae": float(mae.mean()),
            "pearson": float(np.mean(pearson)),
            "spearman": float(np.mean(spearman)),
            "mse_per_target": mse.tolist(),
            "mae_per_target": mae.tolist(),
            "pearson_per_target": pearson,
            "spearman_per_target": spearman,
        }
