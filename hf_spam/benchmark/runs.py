"""One timed run of a variant (hf_spam, or transformers' ``GPT2ForSequenceClassification`` + ``Trainer``), or of
inference, each in the process that calls it: the orchestrator starts one worker process per run."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, TrainerCallback, pipeline

from ..cache.build import PrefixCacheOptions, prepare
from ..data import load_sms_spam, tokenize
from ..models.gpt.modeling_gpt import GPTForSequenceClassification
from ..serving.classifier import predict_proba
from ..tokenizer import gpt2_tokenizer
from ..training.allocator import reuse_freed_memory
from ..training.config import SpamTrainingArguments
from ..training.evaluation import make_compute_metrics
from ..training.model_setup import configure_trainable
from ..training.trainer import SpamTrainer
from .machine import peak_rss_mib
from .recipe import QUICK, train_memory_bytes

# transformers: GPT2ForSequenceClassification + Trainer with per-batch padding (DataCollatorWithPadding), what a
# competent user runs and the reference of every ratio; transformers_padded: the same padded to 120 (the book's way)
# *_bf16: the same with --bf16 (Trainer's autocast; hf_spam computes and stores its prefix cache in bf16 too)
VARIANTS = ("hf_spam", "hf_spam_bf16", "hf_spam_book", "transformers", "transformers_bf16", "transformers_padded")
INFERENCE = ("hf_spam", "pipeline_batched", "pipeline")  # pipeline_batched: pipeline(..., batch_size=32); pipeline: batch size 1


def build_checkpoint(folder: Path, seed: int = 123) -> None:
    """A transformers GPT-2 small (124M) checkpoint with random weights."""
    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)


def _same_head(weight: torch.Tensor, bias: torch.Tensor | None = None, seed: int = 123) -> None:
    """Every variant starts from the identical N(0, 0.02) head (and zero bias), so accuracies compare."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape, generator=generator) * 0.02)
        if bias is not None:
            bias.zero_()


def _slice(splits: dict, quick: bool) -> dict:
    """The quick slice of each split (token ids or cached prefixes), or the splits themselves."""
    return {name: split.select(range(QUICK[name])) for name, split in splits.items()} if quick else dict(splits)


def _training_args(output_dir: str, quick: bool, seed: int, bf16: bool, **extra):
    steps = {"max_steps": QUICK["steps"]} if quick else {}
    return SpamTrainingArguments(
        output_dir=output_dir,
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        save_strategy="no",
        seed=seed,
        bf16=bf16,
        **steps,
        **extra,
    )


class StepClock(TrainerCallback):
    """When each optimizer step ends. A quick run scales its steady step time, not its start-up: Trainer's
    setup and the first step are paid once per run; scaled with the steps, they made hf_spam's quick
    training loop much longer than the full run's (BENCHMARKS.md, "The quick slice against the full run")."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.ends.append(time.perf_counter())

    def steady_step(self) -> float:
        """Seconds per step after the first."""
        return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1) if len(self.ends) > 1 else 0.0


def _train_flops(trainer, batches: int = 6) -> float:
    """FLOPs of forward + backward per trained token, counted by torch on a few real training batches."""
    flops, tokens = 0, 0
    loader = trainer.get_train_dataloader()
    for index, batch in enumerate(loader):
        if index == batches:
            break
        with FlopCounterMode(display=False) as counter:
            trainer.model(**batch).loss.backward()
        trainer.model.zero_grad()
        flops += counter.get_total_flops()
        tokens += batch["input_ids"].numel()
    return flops / tokens


def run_variant(variant: str, checkpoint: str, data_file: str, quick: bool, seed: int = 123, baseline_reuses_memory: bool = False) -> dict:
    """One timed run of the work unit (or its quick slice) in this process.

    hf_spam runs with its defaults, ``reuse_freed_memory`` included; the transformers baselines with
    glibc's defaults, as transformers runs, unless ``baseline_reuses_memory`` (the same allocator for both).
    """

    if not variant.startswith("transformers") or baseline_reuses_memory:
        reuse_freed_memory()  # as hf-spam train's main() does by default (--reuse_freed_memory)
    started = time.perf_counter()
    clock = StepClock()
    book = variant in ("hf_spam_book", "transformers_padded")
    bf16 = variant.endswith("_bf16")
    data = tokenize(load_sms_spam(data_file), "longest_train" if book else "dynamic")  # whole splits: padding as in the full run
    output_dir = tempfile.mkdtemp()
    timings: dict[str, float] = {}
    if variant.startswith("transformers"):
        # the book's recipe trains without dropout (GPT-2's config would add 0.1)
        model = GPT2ForSequenceClassification.from_pretrained(
            checkpoint, num_labels=2, pad_token_id=50256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
        )
        _same_head(model.score.weight, seed=seed)
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(("transformer.h.11.", "transformer.ln_f.", "score."))
        args = _training_args(
            output_dir,
            quick,
            seed,
            bf16,
            weight_decay_scope="transformers",
            train_sampling_strategy="random",
            prefix_cache=False,
        )
        # plain Trainer semantics (its weight-decay rule), but only training drops its last partial batch, as
        # for hf_spam: Trainer's dataloader_drop_last would cut evaluation too and score 1,480 of 1,494
        evaluated = _slice(data.splits, quick)
        trainer = SpamTrainer(
            model=model,
            args=args,
            train_dataset=evaluated["train"],
            data_collator=data.collator,
            compute_metrics=make_compute_metrics(2),
            callbacks=[clock],
        )
    else:
        model = GPTForSequenceClassification.from_gpt2(checkpoint, num_labels=2, pooling="last" if book else "last_non_pad")
        _same_head(model.out_head.weight, model.out_head.bias, seed=seed)
        model = configure_trainable(model, "last_block")
        args = _training_args(output_dir, quick, seed, bf16)
        cache_started = time.perf_counter()
        # a fresh cache folder per run: each run pays for its prefix, as the baselines pay for their forward;
        # under bf16 the prefix runs under autocast as training does (what hf-spam train --bf16 does)
        folder = Path(output_dir) / "prefix_cache"
        # even in --quick the whole cache is built and timed: its fixed costs (hashing the frozen weights) do not scale
        cached, collator = prepare(
            model,
            data.splits,
            PrefixCacheOptions(folder, batch_size=args.per_device_eval_batch_size * 4, autocast=torch.bfloat16 if bf16 else None),
        )
        timings["cache"] = time.perf_counter() - cache_started
        examples_cached = sum(map(len, cached.values()))
        evaluated = _slice(cached, quick)
        trainer = SpamTrainer(
            model=model,
            args=args,
            train_dataset=evaluated["train"],
            data_collator=collator,
            compute_metrics=make_compute_metrics(2),
            callbacks=[clock],
        )
    timings["setup"] = time.perf_counter() - started - timings.get("cache", 0.0)
    result = trainer.train()
    timings["train"] = result.metrics["train_runtime"]
    timings["steady_step"] = clock.steady_step()
    steps = trainer.state.global_step
    eval_started = time.perf_counter()
    names = ("validation", "test") if quick else ("train", "validation", "test")
    metrics = {name: trainer.evaluate(evaluated[name], metric_key_prefix=name) for name in names}
    timings["evaluate"] = time.perf_counter() - eval_started
    flops_per_token = _train_flops(trainer)
    return {
        "variant": variant,
        "quick": quick,
        "steps": steps,
        "timings": timings,
        "examples_evaluated": sum(len(evaluated[n]) for n in names),
        "examples_cached": examples_cached if "cache" in timings else 0,
        "accuracy": {name: m[f"{name}_accuracy"] for name, m in metrics.items()},
        "train_flops": flops_per_token * _trained_tokens(trainer),
        "train_memory_bytes": train_memory_bytes(trainer.model) * steps,
        "peak_rss_mib": peak_rss_mib(),
    }


def _trained_tokens(trainer) -> int:
    """Tokens in the batches the timed steps trained on (the sampler is seeded, so this replays them)."""
    total = 0
    for index, batch in enumerate(trainer.get_train_dataloader()):
        if index == trainer.state.global_step:
            break
        total += batch["input_ids"].numel()
    if trainer.state.global_step > index + 1:  # several epochs: the same batches again (shuffled)
        total = total * trainer.state.global_step // (index + 1)
    return total


def time_inference(variant: str, checkpoint: str, data_file: str) -> dict:
    """Classify the 300 test messages: hf_spam's batched predictor vs transformers' pipeline (batch 32, and batch 1)."""

    texts = list(load_sms_spam(data_file)["test"]["text"])
    tokenizer = gpt2_tokenizer()
    if variant.startswith("pipeline"):
        model = GPT2ForSequenceClassification.from_pretrained(checkpoint, num_labels=2, pad_token_id=50256).eval()
        classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)
        batch_size = 32 if variant == "pipeline_batched" else 1
        classify(texts[:2], batch_size=batch_size)
        started = time.perf_counter()
        classify(texts, batch_size=batch_size)
    else:
        model = GPTForSequenceClassification.from_gpt2(checkpoint, num_labels=2).eval()
        predict_proba(model, tokenizer, texts[:2])
        started = time.perf_counter()
        predict_proba(model, tokenizer, texts)
    seconds = time.perf_counter() - started
    return {
        "variant": variant,
        "seconds": seconds,
        "messages_per_second": len(texts) / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }
