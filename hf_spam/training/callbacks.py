"""Trainer callbacks that ``SpamTrainer`` adds (TRL keeps its shared callbacks in one module too)."""

from __future__ import annotations

from transformers import EarlyStoppingCallback
from transformers.trainer_callback import ProgressCallback


class ValidationEarlyStopping(EarlyStoppingCallback):
    """transformers' early stopping, acting on the evaluations that report its metric.

    hf_spam also evaluates the training split (and, at the end, every split); transformers' callback
    would log on each of those that its metric is missing "so early stopping is disabled", which is
    false: it only concerns that one evaluation. Those evaluations are simply not its business.
    """

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        metric = args.metric_for_best_model if args.metric_for_best_model.startswith("eval_") else f"eval_{args.metric_for_best_model}"
        if metric in metrics:
            super().on_evaluate(args, state, control, metrics, **kwargs)


class TrainingProgress(ProgressCallback):
    """transformers' progress bar for the training steps, without its bar per evaluation batch: hf_spam evaluates
    two splits each epoch, and those bars, nested under the training bar, left about 20 lines per epoch in a log
    (a quick start printed over 400). The evaluations' metrics are still printed as Trainer logs them."""

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass
