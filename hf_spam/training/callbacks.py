"""Trainer callbacks that ``SpamTrainer`` adds (TRL keeps its shared callbacks in one module too)."""

from __future__ import annotations

import logging

from transformers import EarlyStoppingCallback
from transformers.trainer_callback import ProgressCallback

logger = logging.getLogger(__name__)
# the figures of an evaluation shown on its epoch's line (the rest is in trainer_state.json and all_results.json)
EPOCH_LINE_METRICS = ("accuracy", "f1_micro", "mse", "loss")


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
    """transformers' progress bar for the training steps, without its bar per evaluation batch, and one line per
    epoch's evaluations: hf_spam evaluates two splits each epoch, and those bars, nested under the training bar, left
    about 20 lines per epoch in a log (a quick start printed over 400), and Trainer prints each log as a dict (the
    running loss every ``logging_steps``, each split's evaluation with its timings). The losses are in the plots and
    ``trainer_state.json``; with the ``hf_spam`` logger at DEBUG (``hf-spam train -v``) every log is printed as Trainer
    prints it."""

    def __init__(self, max_str_len: int = 100) -> None:
        super().__init__(max_str_len)
        self.evaluated: dict[str, float] = {}

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logger.isEnabledFor(logging.DEBUG):
            return super().on_log(args, state, control, logs=logs, **kwargs)
        if not state.is_world_process_zero or self.training_bar is None:
            return
        figures = {
            key.removeprefix("eval_"): value
            for key, value in (logs or {}).items()
            if key.startswith("eval_") and key.endswith(EPOCH_LINE_METRICS) and isinstance(value, float)
        }
        self.evaluated |= figures
        if figures and any(key.startswith("train_") for key in figures):  # the training split is evaluated last
            self.write_epoch(state.epoch)

    def on_train_end(self, args, state, control, **kwargs):
        if self.evaluated and self.training_bar is not None:
            self.write_epoch(state.epoch)
        super().on_train_end(args, state, control, **kwargs)

    def write_epoch(self, epoch: float | None) -> None:
        shown = ", ".join(f"{name} {value:.4f}" for name, value in self.evaluated.items())
        self.training_bar.write(f"epoch {epoch:g}: {shown}" if epoch is not None else shown)
        self.evaluated = {}
