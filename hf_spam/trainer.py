"""``SpamTrainer``: ``Trainer`` with the book's optimizer and data details, its metrics, and hf_spam's model card."""

from __future__ import annotations

import contextlib
from pathlib import Path

import evaluate
import numpy as np
import torch
from huggingface_hub import ModelCard
from transformers import EarlyStoppingCallback, EvalPrediction, Trainer, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from .data.targets import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from .modeling_gpt import GPTForSequenceClassification

METRICS = Path(__file__).parent / "metrics"


class SpamTrainer(Trainer):
    """``Trainer`` with the book's weight decay and evaluation batches, writing hf_spam's model card.

    ``model_card`` (set before the final push) replaces Trainer's generic card, which knows nothing
    of the dataset, the recipe or the test split.
    """

    model_card: ModelCard | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._top_parameters: dict[int, int] = {}

    def floating_point_ops(self, inputs: dict) -> int:
        """Trainer's estimate, 6 x tokens x parameters, over the parameters the step runs through.

        On the cached prefix (``prefix_depth`` in the batch) that is blocks ``[depth:]``, ``final_norm``
        and the head, not the whole model Trainer would count (which overstates ``total_flos`` by the frozen
        blocks); counted once per depth instead of walking every module on every step.
        """
        depth = inputs.get("prefix_depth")
        if depth is None or not isinstance(self.model, GPTForSequenceClassification):
            return super().floating_point_ops(inputs)
        if depth not in self._top_parameters:
            top = (*self.model.model.trf_blocks[depth:], self.model.model.final_norm, self.model.out_head)
            self._top_parameters[depth] = sum(p.numel() for module in top for p in module.parameters())
        return 6 * inputs["input_ids"].numel() * self._top_parameters[depth]

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm=None):
        """The gradient norm, taken only for the steps that log it.

        Trainer (v5) takes it after every backward, only to log it: with ``max_grad_norm`` 0 (the book
        clips nothing) that is ``clip_grad_norm_(..., inf)``, a pass over every gradient and a multiply
        by 1, a quarter of a step of the book recipe on CPU (BENCHMARKS.md). Which steps log is known beforehand from
        ``logging_strategy``/``logging_steps``/``logging_first_step`` (as ``DefaultFlowCallback`` decides);
        a log that another callback requests on another step goes without ``grad_norm``, never with a stale one.
        """
        if grad_norm is None and not self._logs_next_step():
            return None
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def _logs_next_step(self) -> bool:
        step, args = self.state.global_step + 1, self.args  # global_step counts the step after its optimizer update
        if step == 1 and args.logging_first_step:
            return True
        if args.logging_strategy == IntervalStrategy.STEPS:
            return step % self.state.logging_steps == 0
        return args.logging_strategy != IntervalStrategy.NO  # epoch: the last step's norm is logged, which one is last is not known here

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """The book's ``AdamW(model.parameters(), weight_decay=0.1)`` decays everything. Trainer's default
        spares parameters by name: biases and ``final_norm`` (``_norm``), but not ``norm1``/``norm2``:
        an accident of the book's names, so the book's rule is the default here."""
        if self.args.weight_decay_scope == "book":
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def get_eval_dataloader(self, eval_dataset=None):
        with _eval_keeps_last_batch(self.args):
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        with _eval_keeps_last_batch(self.args):
            return super().get_test_dataloader(test_dataset)

    def create_model_card(self, **kwargs) -> None:
        if self.model_card is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            self.model_card.save(Path(self.args.output_dir) / "README.md")


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


@contextlib.contextmanager
def _eval_keeps_last_batch(args: TrainingArguments):
    """The book drops the last partial batch in training only (``drop_last=True`` on ``train_loader``)."""
    saved = args.dataloader_drop_last
    args.dataloader_drop_last = False
    try:
        yield
    finally:
        args.dataloader_drop_last = saved


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
    metric: evaluate.EvaluationModule, logits: np.ndarray, references: np.ndarray, problem_type: str, num_labels: int, threshold: float = 0.5
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
