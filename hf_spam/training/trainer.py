"""``SpamTrainer``: ``Trainer`` for the book's classifier, configured by
:class:`~hf_spam.training.config.SpamTrainingArguments` (TRL's ``*_trainer.py`` beside its ``*_config.py``).

Besides the book's optimizer and data details, it owns what a run does around ``train()``: it trains on the
datasets it is given (token ids, or the cached prefixes ``hf_spam.cache.prepare`` makes of them), evaluates the
validation and the training split every epoch, measures every split before and after training, and writes
the run's metrics, plots and model card.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from huggingface_hub.errors import HfHubHTTPError
from torch.utils.data import RandomSampler, Sampler
from transformers import Trainer, TrainerState
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import IntervalStrategy, TrainOutput

from ..cache.management import format_size
from ..cache.rows import CachedPrefix
from ..errors import HubError, TrainingError
from ..models.gpt.configuration_gpt import MULTI_LABEL, SINGLE_LABEL
from ..models.gpt.model_checksums import CHECKSUMS_NAME, write_checksums
from ..models.gpt.modeling_gpt import GPTForSequenceClassification
from ..tokenizer import gpt2_tokenizer
from .callbacks import TrainingProgress, ValidationEarlyStopping
from .checkpoints import CheckpointManifest, remove_checkpoints, run_identity, write_manifest
from .config import SpamTrainingArguments
from .evaluation import make_compute_metrics, metric_for, metric_results
from .model_card import RunRecord, build_model_card
from .plots import plot_history

logger = logging.getLogger(__name__)

# the HTTP library's base error that huggingface_hub's own derives from (httpx's in huggingface_hub 1.x, httpx2's in
# 2.x): an HTTP error status and a dropped or refused connection alike
HUB_HTTP_ERROR = next(base for base in HfHubHTTPError.__mro__[1:] if base.__name__ == "HTTPError")

# Trainer's timing figures of an evaluation: the final evaluation of the training split must not overwrite train()'s
TIMING_KEYS = ("_runtime", "_per_second", "_model_preparation_time")
# the figures logged at the end (all of them are in all_results.json)
SHOWN = ("accuracy", "loss", "f1", "f1_micro", "f1_macro", "exact_match", "mse", "mae", "pearson", "spearman")


class SpamTrainer(Trainer):
    """``Trainer`` with the book's weight decay and evaluation batches, hf_spam's evaluations of every split, and its model card.

    The datasets are token ids, or each split's cached prefix (``hf_spam.cache.prepare``: the frozen prefix of the
    model run once, exact), which is recorded in :attr:`run_metrics`. ``eval_dataset`` is the
    validation split: Trainer evaluates it every epoch beside the first ``args.train_eval_batches`` batches of
    the training split (metrics ``eval_validation_*``, ``eval_train_*``). ``test_dataset`` is measured by
    :meth:`evaluate_initial` and :meth:`evaluate_final`. ``run`` describes the run for the model card that
    :meth:`save_run` and ``push_to_hub`` write; without it, Trainer's own card.

    Each checkpoint gets a manifest of its files and of the run (``identity``: ``checkpoints.run_identity``, computed
    here when not given). Trainer's own rotation (``save_total_limit``) keeps them: the folder holds no other run's
    (``checkpoints.claim_output_dir``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        args: SpamTrainingArguments,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        *,
        test_dataset=None,
        run: RunRecord | None = None,
        identity: dict | None = None,
        callbacks=None,
        compute_metrics=None,
        **kwargs,
    ) -> None:
        if isinstance(eval_dataset, dict):
            raise TypeError(
                "SpamTrainer names its evaluation sets itself (validation, and the training split): pass eval_dataset as one dataset."
            )
        self.run = run
        self.run_metrics: dict = {f"dropped_rows_{name}": count for name, count in run.dropped_rows.items()} if run else {}
        self._top_parameters: dict[int, int] = {}
        splits = {"train": train_dataset, "validation": eval_dataset, "test": test_dataset}
        self.run_metrics |= _prefix_cache_metrics(splits)
        self.test_dataset = test_dataset
        if eval_dataset is not None:
            eval_dataset = {
                "validation": eval_dataset,
                "train": _first_batches(train_dataset, args.train_eval_batches, args.per_device_eval_batch_size),
            }
        identity = identity or run_identity(model, args, run.data_fingerprint if run else None)
        callbacks = [CheckpointManifest(identity), *(callbacks or [])]
        if args.early_stopping_patience:
            callbacks.append(ValidationEarlyStopping(args.early_stopping_patience))
        if compute_metrics is None and eval_dataset is not None:
            config = model.config
            compute_metrics = make_compute_metrics(config.num_labels, config.problem_type or SINGLE_LABEL, args.threshold)
        if getattr(model.config, "problem_type", None) == MULTI_LABEL:
            model.config.threshold = args.threshold  # the saved model predicts as this run was evaluated
        super().__init__(
            model, args, data_collator, train_dataset, eval_dataset, callbacks=callbacks, compute_metrics=compute_metrics, **kwargs
        )
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(TrainingProgress)
        self.identity = identity
        self._warn_if_fsdp_ignored()

    def _warn_if_fsdp_ignored(self) -> None:
        """accelerate turns FSDP on only for accelerators (GPUs and the like): asked for on CPU processes
        (``accelerate launch --use_fsdp``, or ``--fsdp``), it trains with DDP, every process holding the whole
        model, and says nothing. The run is right, but not sharded: say so."""
        asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" or bool(self.args.fsdp)
        if asked and not self.is_fsdp_enabled:
            logger.warning(
                "FSDP was asked for, but accelerate shards only on accelerators (GPUs): on %s it trains with DDP, "
                "every process holding the whole model.",
                self.args.device.type,
            )

    def _split(self, name: str):
        return {"train": self.train_dataset, "validation": self.eval_dataset["validation"], "test": self.test_dataset}[name]

    def evaluate_initial(self) -> dict:
        """Every split's figures before training, on its first ``args.initial_eval_batches`` batches (the book
        measures 10 batches of each; 0 skips), as ``initial_train_*``, ``initial_eval_*`` and ``initial_test_*``."""
        batches, results = self.args.initial_eval_batches, {}
        if not batches:
            return results
        for split, prefix in (("train", "initial_train"), ("validation", "initial_eval"), ("test", "initial_test")):
            subset = _first_batches(self._split(split), batches, self.args.per_device_eval_batch_size)
            results.update(self.evaluate(subset, metric_key_prefix=prefix))
        self.log_metrics("initial", {k: v for k, v in results.items() if k.endswith(("accuracy", "loss"))})
        self.run_metrics |= results
        return results

    def evaluate_final(self, train_output: TrainOutput) -> dict:
        """Every whole split's figures with the final model (``train_*``, ``eval_*``, ``test_*``), the test split's
        also per class (with its confusion matrix for single-label classes) or per target, and ``train()``'s own;
        its running loss as ``train_running_loss``, since ``train_loss`` is the final model's."""
        results = {k: v for k, v in train_output.metrics.items() if k != "train_loss"}
        if "train_loss" in train_output.metrics:  # not when nothing was left to train (see train)
            results["train_running_loss"] = train_output.metrics["train_loss"]
        train_eval = self.evaluate(self.train_dataset, metric_key_prefix="train")
        results.update({k: v for k, v in train_eval.items() if not k.endswith(TIMING_KEYS)})
        results.update(self.evaluate(self._split("validation"), metric_key_prefix="eval"))
        test = self.predict(self.test_dataset, metric_key_prefix="test")  # one pass: metrics and confusion matrix
        results.update(test.metrics)
        config = self.model.config
        problem_type = config.problem_type or SINGLE_LABEL
        metric = metric_for(problem_type, config.num_labels)
        full = metric_results(metric, test.predictions, test.label_ids, problem_type, config.num_labels, self.args.threshold)
        results.update({f"test_{k}": v for k, v in full.items() if not isinstance(v, float)})
        self.log_metrics(
            "final", {k: v for k, v in results.items() if k.split("_", 1)[0] in ("train", "eval", "test") and k.endswith(SHOWN)}
        )
        if problem_type == MULTI_LABEL:
            logger.info(
                "Multi-label: accuracy counts each text's decision for each class (above --threshold %s or not); exact_match "
                "counts the texts whose whole set of classes is right.",
                self.args.threshold,
            )
        self.run_metrics |= results
        return results

    def train(self, resume_from_checkpoint: str | None = None, **kwargs) -> TrainOutput:
        """Trainer's ``train()``, except that a checkpoint already at ``max_steps`` (a run killed while saving its final
        model) is taken as the trained model: Trainer would skip the checkpoint's batches and train one step past the end."""
        if resume_from_checkpoint and self.args.max_steps > 0:
            state = TrainerState.load_from_json(str(Path(resume_from_checkpoint) / "trainer_state.json"))
            if state.global_step >= self.args.max_steps:
                logger.info("%s is this run's last step (%d): nothing is left to train.", resume_from_checkpoint, state.global_step)
                self.state = state
                self._load_from_checkpoint(resume_from_checkpoint)
                if self.args.load_best_model_at_end and state.best_model_checkpoint is not None:  # as Trainer ends a run
                    self._load_best_model()
                return TrainOutput(state.global_step, None, {"total_flos": state.total_flos, "epoch": state.epoch})
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Trainer's push of a checkpoint (``--hub_strategy checkpoint``: ``last-checkpoint/``, resumable elsewhere) and
        of its model as the repository's current one: the checkpoint's manifest and the model's checksums go with
        them. Under several processes the others' RNG files may not be written yet, so no manifest is pushed: such a
        checkpoint resumes when named, with a warning that it could not be checked."""
        folder = Path(checkpoint_folder)
        if self.args.world_size == 1:
            write_manifest(folder, self.identity)
        if (folder / CHECKSUMS_NAME).is_file():  # Trainer copies the checkpoint's weights and config into the output folder
            shutil.copy(folder / CHECKSUMS_NAME, Path(self.args.output_dir) / CHECKSUMS_NAME)
        super()._push_from_checkpoint(checkpoint_folder)

    def save_run(self) -> None:
        """What a finished run leaves: a LoRA model merged into a plain classifier, ``all_results.json``
        (:attr:`run_metrics`), the plots, the model card, and the model (saved, or pushed with Trainer's
        ``push_to_hub``); the ``checkpoint-*`` folders are removed unless ``--keep_checkpoints``."""
        if hasattr(self.model, "merge_and_unload"):  # a PEFT model: the saved and pushed model is a plain classifier
            self.model = self.model.merge_and_unload()
        broken = [name for name, parameter in self.model.named_parameters() if not torch.isfinite(parameter).all()]
        if broken:
            raise TrainingError(
                f"The trained model has NaN or infinite weights ({', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}); "
                f"nothing was saved to {self.args.output_dir}. Lower --learning_rate, or resume from another checkpoint."
            )
        if self.processing_class is None:  # every saved folder works with hf-spam classify, pipeline and the demo
            self.processing_class = gpt2_tokenizer(self.model.config.token_limit)
        output_dir = Path(self.args.output_dir)
        if self.args.push_to_hub:
            # Trainer's push: saves the model (weights, config, code, tokenizer), writes the card, waits for any
            # checkpoint push, then uploads the output folder without checkpoint-* folders
            self._write_report(output_dir)
            commit = self._push(output_dir)
            if self.is_world_process_zero():
                logger.info("Pushed to %s", commit.repo_url)
        else:
            self.save_model()  # weights, config, model code, tokenizer, then their checksums
            self._write_report(output_dir)  # all_results.json last: its presence says the run finished
        if self.is_world_process_zero() and not self.args.keep_checkpoints:
            remove_checkpoints(output_dir)

    def _push(self, output_dir: Path):
        """Trainer's ``push_to_hub``; the Hub's refusal (an HTTP error) or a dropped connection is one
        :class:`~hf_spam.errors.HubError`: the run is saved in ``output_dir`` either way, and can be uploaded again."""
        try:
            return self.push_to_hub(commit_message="hf_spam: finetuned classifier")
        except HUB_HTTP_ERROR as error:
            response = getattr(error, "response", None)
            why = f"HTTP {response.status_code}: " if response is not None else f"{type(error).__name__}: "
            why += str(error).strip().splitlines()[0][:200] if str(error).strip() else "no answer"
            repo = getattr(self, "hub_model_id", None) or self.args.hub_model_id
            raise HubError(
                f"--push_to_hub: the upload to {repo} failed ({why}). The run is saved in {output_dir} (its model, checksums and "
                f"all_results.json); upload it when the Hub answers: hf upload {repo} {output_dir} --exclude 'checkpoint-*'"
            ) from error

    def _write_report(self, output_dir: Path) -> None:
        """The plots, the model card and ``all_results.json`` (:attr:`run_metrics`), by the main process."""
        if not self.is_world_process_zero():
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        examples_per_epoch = len(self.get_train_dataloader()) * self.args.per_device_train_batch_size * self.args.world_size
        train_accuracy_examples = (len(self.eval_dataset["train"]), len(self.train_dataset))
        plot_history(self.state.log_history, output_dir, examples_per_epoch, train_accuracy_examples)
        self.create_model_card()
        self.save_metrics("all", self.run_metrics, combined=False)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer's save (weights, config, code, then the tokenizer), then the model's ``model_checksums.json`` again,
        now over the tokenizer too: a final model, a checkpoint, or what a Hub push uploads."""
        super().save_model(output_dir, _internal_call=_internal_call)
        folder = Path(output_dir or self.args.output_dir)
        if self.args.should_save and (folder / CHECKSUMS_NAME).is_file():
            write_checksums(folder)

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

    def _get_train_sampler(self, train_dataset=None):
        """Trainer's training sampler, cut to whole batches under ``--train_drop_last``: the book's ``drop_last=True``
        on ``train_loader`` alone (``dataloader_drop_last`` would cut every evaluation loader too). The cut keeps the
        sampler's first rows, which are the batches ``drop_last`` keeps; a ``RandomSampler`` stays one (``num_samples``:
        the first rows of the same permutation), so accelerate still reseeds it every epoch and the batches are
        ``drop_last``'s, bit for bit."""
        sampler = super()._get_train_sampler(train_dataset)
        if sampler is None or not self.args.train_drop_last:
            return sampler
        per_round = self._train_batch_size * self.args.world_size  # every process takes a whole batch
        whole = len(sampler) // per_round * per_round
        if type(sampler) is RandomSampler:
            return RandomSampler(sampler.data_source, num_samples=whole, generator=sampler.generator)
        return WholeBatches(sampler, whole)

    def create_model_card(self, **kwargs) -> None:
        """hf_spam's card (``README.md``: the dataset, the recipe, every split's figures) where the run is described;
        Trainer's generic card knows nothing of them."""
        if self.run is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            card = build_model_card(self.args.hub_model_id or self.args.output_dir, self.run, self.run_metrics)
            card.save(Path(self.args.output_dir) / "README.md")


def _prefix_cache_metrics(splits: dict) -> dict:
    """Which cache each cached split read, whether this run built it, and its size (``all_results.json``)."""
    metrics = {}
    for name, cache in splits.items():
        if isinstance(cache, CachedPrefix):
            logger.info(
                "Prefix cache for %s: %s, %s (%s).",
                name,
                cache.folder,
                "built by this run" if cache.built else "reused",
                format_size(cache.bytes),
            )
            metrics |= {
                f"prefix_cache_{name}_key": cache.folder.name,
                f"prefix_cache_{name}_built": cache.built,
                f"prefix_cache_{name}_bytes": cache.bytes,
            }
    return metrics


def _first_batches(dataset, batches: int | None, batch_size: int):
    return dataset if batches is None else dataset.select(range(min(len(dataset), batches * batch_size)))


class WholeBatches(Sampler[int]):
    """The first ``count`` indices ``sampler`` draws: what a loader's ``drop_last`` keeps, for the training loader only."""

    def __init__(self, sampler: Sampler[int], count: int) -> None:
        self.sampler, self.count = sampler, count

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.count)

    def __len__(self) -> int:
        return self.count
