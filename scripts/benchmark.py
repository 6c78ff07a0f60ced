"""python scripts/benchmark.py --data_file path/to/SMSSpamCollection --quick --json bench.json

Side-by-side timing of the book recipe: hf_spam's default path, hf_spam in book-exact mode, and
transformers' ``GPT2ForSequenceClassification`` + ``Trainer`` with per-batch padding (``DataCollatorWithPadding``,
the reference of the ratios) and padded to 120 as the book; ``*_bf16`` variants run the same with ``--bf16``
(Trainer's autocast; hf_spam's prefix cache too); plus inference on the test messages against
``pipeline`` with ``batch_size=32`` (and 1).

All start from one GPT-2-small checkpoint with random weights (pretrained weights cannot be
downloaded here; speed does not depend on their values). Each variant runs in its own process, so
peak memory is its own, and the rounds alternate variants so machine noise does not decide a ratio.

The work unit: last block + final LayerNorm + head trainable, AdamW lr 5e-5 / weight decay 0.1,
constant rate, batch 8, 5 epochs over the 1,045 training messages (650 steps, the last partial batch
dropped), then accuracy on train, validation and test (1,494 messages). ``--quick`` times a fixed
slice (20 steps on 160 messages, 160 evaluated) and scales each phase linearly to the work unit: steps
by 650/20, evaluation by messages; hf_spam's prefix cache is built for all 1,494 messages and timed as is.
``--json`` holds every figure, the ratios and the recipe's FLOP limit (see ``recipe_flops``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import TrainerCallback

from hf_spam import GPTForSequenceClassification
from hf_spam.pooled_position import prefix

FULL_STEPS = 5 * (1045 // 8)
FULL_EXAMPLES = 1045 + 149 + 300
QUICK = {"train": 160, "validation": 80, "test": 80, "steps": 20}
# transformers: GPT2ForSequenceClassification + Trainer with per-batch padding (DataCollatorWithPadding), what a
# competent user runs and the reference of every ratio; transformers_padded: the same padded to 120 (the book's way)
# *_bf16: the same with --bf16 (Trainer's autocast; hf_spam computes and stores its prefix cache in bf16 too)
VARIANTS = ("hf_spam", "hf_spam_bf16", "hf_spam_book", "transformers", "transformers_bf16", "transformers_padded")
INFERENCE = ("hf_spam", "pipeline_batched", "pipeline")  # pipeline_batched: pipeline(..., batch_size=32); pipeline: batch size 1


def matmul_peak_flops(sizes: tuple[int, ...] = (1024, 2048), seconds: float = 2.0, dtype: torch.dtype = torch.float32) -> float:
    """The best ``a @ b`` FLOP/s of this machine at this thread count and dtype (a denominator, not a claim)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        reps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / len(sizes):
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - started))
    return best


def memory_bandwidth(gib: float = 0.5, reps: int = 10) -> float:
    """Bytes/s of a large tensor copy (read + write), the ceiling of the optimizer's elementwise work."""
    a = torch.ones(int(gib * 2**30) // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    started = time.perf_counter()
    for _ in range(reps):
        b.copy_(a)
    return reps * 2 * a.numel() * 4 / (time.perf_counter() - started)


def recipe_flops(data_file: str) -> dict:
    """The FLOPs the book recipe cannot avoid, counted by torch on a meta-device GPT-2 small.

    Every message at its own length (no padding): embeddings + the 11 frozen blocks once per distinct
    message (a repeated message has the same prefix: 1,388 of the 1,494 are distinct), the last block
    + head forward and backward for the pooled position (its query meeting every position, see
    ``pooled_position.attention_at``) for the 5 x 1,040 trained examples, and the last block + head forward once per message for the final
    accuracies. The optimizer's elementwise work is not a matrix product and is left out (see
    ``train_memory_bytes``).
    """
    from hf_spam import GPTConfig
    from hf_spam.data import load_sms_spam, tokenize
    from hf_spam.model_setup import configure_trainable

    with torch.device("meta"):
        model = configure_trainable(GPTForSequenceClassification(GPTConfig(num_labels=2)), "last_block")
    depth = model.config.n_layers - 1

    @functools.cache
    def per_message(length: int) -> tuple[int, int, int]:
        ids = torch.zeros(1, length, dtype=torch.long, device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as frozen:
            hidden = prefix(model.model, ids, None, depth)
        top = {"prefix_hidden_states": hidden, "prefix_depth": depth, "input_ids": ids}
        with FlopCounterMode(display=False) as train:
            model(**top, labels=torch.zeros(1, dtype=torch.long, device="meta")).loss.backward()
        with torch.no_grad(), FlopCounterMode(display=False) as evaluate:
            model(**top)
        return frozen.get_total_flops(), train.get_total_flops(), evaluate.get_total_flops()

    data = tokenize(load_sms_spam(data_file), "dynamic")
    lengths = {name: [len(ids) for ids in split["input_ids"]] for name, split in data.splits.items()}
    every = [n for split in lengths.values() for n in split]
    distinct = [len(ids) for ids in {tuple(ids) for split in data.splits.values() for ids in split["input_ids"]}]
    train = [per_message(n)[1] for n in lengths["train"]]
    return {
        "prefix": sum(per_message(n)[0] for n in distinct),
        "train": FULL_STEPS * 8 * sum(train) / len(train),
        "evaluate": sum(per_message(n)[2] for n in every),
        "tokens": sum(every),
    }


def train_memory_bytes(model: torch.nn.Module) -> int:
    """Bytes one training step must move for the trainable parameters, fp32: forward and backward read the
    weights (2), backward writes the gradients (1), fused AdamW reads weight, gradient and both moments and
    writes weight and moments (7). Sizes exceed the caches. (Trainer's gradient norm would read the gradients
    once more; ``SpamTrainer`` takes it only on logging steps, and the benchmark does not log.)"""
    return 10 * 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB.

    Not ``ru_maxrss``: Linux carries it over from the process that forked this one, so every worker would
    report at least the orchestrator's memory (over a GiB once it has measured the machine). ``VmHWM`` is the
    peak of this program's own address space.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_checkpoint(folder: Path, seed: int = 123) -> None:
    """A transformers GPT-2 small (124M) checkpoint with random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

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
    from hf_spam.spam_config import SpamTrainingArguments

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
    from transformers import GPT2ForSequenceClassification

    from hf_spam.allocator import reuse_freed_memory
    from hf_spam.cached_trunk import cached_splits
    from hf_spam.data import load_sms_spam, tokenize
    from hf_spam.evaluation import make_compute_metrics
    from hf_spam.model_setup import configure_trainable
    from hf_spam.spam_trainer import SpamTrainer

    if not variant.startswith("transformers") or baseline_reuses_memory:
        reuse_freed_memory()  # as scripts/train.py's main() does by default (--reuse_freed_memory)
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
            cache_frozen_trunk=False,
        )
        # plain Trainer semantics (its weight-decay rule), but evaluation keeps the last partial batch as
        # for hf_spam: Trainer would apply dataloader_drop_last to evaluation and score 1,480 of 1,494
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
        # under bf16 the prefix runs under autocast as training does (what scripts/train.py --bf16 does)
        folder = Path(output_dir) / "trunk_cache"
        # even in --quick the whole cache is built and timed: its fixed costs (hashing the frozen weights) do not scale
        cached, collator = cached_splits(
            model, data.splits, args.per_device_eval_batch_size * 4, folder, autocast=torch.bfloat16 if bf16 else None
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


def extrapolate(run: dict) -> dict:
    """Each phase scaled from a quick run's slice to the work unit (a full run is returned as measured): training
    adds the missing steps at the measured steady step time, evaluation scales by messages, the cache is whole."""
    t = run["timings"]
    step_scale = FULL_STEPS / run["steps"] if run["quick"] else 1.0
    phases = {
        "setup": t["setup"],
        "cache": t.get("cache", 0.0) * (FULL_EXAMPLES / run["examples_cached"] if run["quick"] and run["examples_cached"] else 1.0),
        # the run as measured, plus the steps it did not make at its steady rate
        "train": t["train"] + t["steady_step"] * (FULL_STEPS - run["steps"]) if run["quick"] else t["train"],
        "evaluate": t["evaluate"] * (FULL_EXAMPLES / run["examples_evaluated"] if run["quick"] else 1.0),
    }
    return {
        **phases,
        "wall": sum(phases.values()),
        "train_flops": run["train_flops"] * step_scale,
        "train_memory_bytes": run["train_memory_bytes"] * step_scale,
    }


def time_inference(variant: str, checkpoint: str, data_file: str) -> dict:
    """Classify the 300 test messages: hf_spam's batched predictor vs transformers' pipeline (batch 32, and batch 1)."""
    from transformers import GPT2ForSequenceClassification, pipeline

    from hf_spam import gpt2_tokenizer
    from hf_spam.data import load_sms_spam
    from hf_spam.inference import predict_proba

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


def sweep(lengths: tuple[int, ...] = (32, 64, 120, 256), sizes: tuple[int, ...] = (1045, 10_000), reps: int = 3) -> list[dict]:
    """How the work unit's cost grows with message length and training-set size.

    Measures, at each padded length T (batch 8): one training step of hf_spam's cached top (last block
    + head, AdamW), one training step of transformers' GPT-2 (full forward, last-block backward, AdamW),
    one inference forward of each per message, and hf_spam's prefix cost per message. Then projects
    5 epochs + evaluation of train/validation/test (splits 70/10/20) for each training-set size.
    """
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from hf_spam import GPTConfig
    from hf_spam.model_setup import configure_trainable

    torch.manual_seed(0)
    ours = configure_trainable(GPTForSequenceClassification(GPTConfig()), "last_block")
    depth = ours.config.n_layers - 1
    theirs = GPT2ForSequenceClassification(GPT2Config(pad_token_id=50256))
    for name, param in theirs.named_parameters():
        param.requires_grad = name.startswith(("transformer.h.11.", "transformer.ln_f.", "score."))
    optimizers = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=5e-5, weight_decay=0.1) for m in (ours, theirs)]

    def best(fn, *args) -> float:
        fn(*args)
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - started)
        return min(times)

    def step(model, optimizer, inputs):
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    rows = []
    for length in lengths:
        ids = torch.randint(0, 50000, (8, length))
        labels = torch.randint(0, 2, (8,))
        hidden = torch.randn(8, length, 768)
        cached = {"prefix_hidden_states": hidden, "prefix_depth": depth, "input_ids": ids, "labels": labels}
        ours_step = best(step, ours, optimizers[0], cached)
        theirs_step = best(step, theirs, optimizers[1], {"input_ids": ids, "labels": labels})
        with torch.inference_mode():
            prefix_time = best(prefix, ours.model, ids, None, depth) / 8
            ours_eval = best(functools.partial(ours, prefix_hidden_states=hidden, prefix_depth=depth, input_ids=ids)) / 8
            theirs_eval = best(theirs, ids) / 8
        for size in sizes:
            total = round(size / 0.7)
            steps = 5 * (size // 8)
            ours_total = total * (prefix_time + ours_eval) + steps * ours_step
            theirs_total = total * theirs_eval + steps * theirs_step
            rows.append(
                {
                    "tokens": length,
                    "train_messages": size,
                    "hf_spam_s": ours_total,
                    "transformers_s": theirs_total,
                    "ratio": theirs_total / ours_total,
                }
            )
    return rows


def format_sweep(rows: list[dict]) -> str:
    lines = ["| tokens per message | training messages | hf_spam s | transformers s | ratio |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['tokens']} | {r['train_messages']:,} | {r['hf_spam_s']:.0f} | {r['transformers_s']:.0f} | {r['ratio']:.1f} |" for r in rows
    ]
    return "\n".join(lines)


def _worker(argv: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise RuntimeError(f"benchmark worker {argv[:2]} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_file", required=True, help="SMSSpamCollection (or the UCI zip)")
    parser.add_argument("--quick", action="store_true", help="time a fixed slice and extrapolate (about 10 min on 2 CPU cores)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds of the three variants (default: 2 quick, 1 full)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="which training variants to time (transformers always)"
    )
    parser.add_argument("--seed", type=int, default=123, help="seed of the head, the batch order and the checkpoint's random weights")
    parser.add_argument(
        "--baseline_reuses_freed_memory",
        action="store_true",
        help="run the transformers baselines with hf_spam's --reuse_freed_memory too (by default they keep glibc's defaults)",
    )
    parser.add_argument("--sweep", action="store_true", help="only the sweep over message length and training-set size (about 3 min)")
    parser.add_argument("--worker", choices=[*VARIANTS, *(f"infer_{v}" for v in INFERENCE)], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sweep:
        rows = sweep()
        print(format_sweep(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return {"sweep": rows}
    if args.worker:
        if args.worker.startswith("infer_"):
            print(json.dumps(time_inference(args.worker.removeprefix("infer_"), args.checkpoint, args.data_file)))
        else:
            print(
                json.dumps(
                    run_variant(args.worker, args.checkpoint, args.data_file, args.quick, args.seed, args.baseline_reuses_freed_memory)
                )
            )
        return {}
    return orchestrate(args)


def machine_limits() -> dict:
    """Peak matmul FLOP/s (fp32 and bf16) and copy bandwidth of this machine now."""
    return {"fp32": matmul_peak_flops(), "bf16": matmul_peak_flops(dtype=torch.bfloat16), "bandwidth": memory_bandwidth()}


def orchestrate(args: argparse.Namespace) -> dict:
    rounds = args.rounds or (2 if args.quick else 1)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    recipe = recipe_flops(args.data_file)  # first: a failure here must not cost the timed runs
    before = machine_limits()
    with tempfile.TemporaryDirectory() as folder:
        build_checkpoint(Path(folder), args.seed)
        common = ["--checkpoint", folder, "--data_file", args.data_file, "--seed", str(args.seed)]
        common += (["--quick"] if args.quick else []) + (["--baseline_reuses_freed_memory"] if args.baseline_reuses_freed_memory else [])
        runs = {v: [] for v in VARIANTS if v in args.variants or v == "transformers"}
        for _ in range(rounds):
            for variant in runs:
                runs[variant].append(_worker(["--worker", variant, *common], env))
        inference = {v: [] for v in INFERENCE}
        for _ in range(max(rounds, 2)):
            for variant in inference:
                inference[variant].append(_worker(["--worker", f"infer_{variant}", *common], env))
    after = machine_limits()
    # the machine's speed drifts: the higher peak gives the lower fraction
    limits = {name: max(before[name], after[name]) for name in before}
    results = summarize(runs, inference, limits, recipe, args.quick)
    results["seed"] = args.seed
    results["baseline_reuses_freed_memory"] = args.baseline_reuses_freed_memory
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def summarize(runs: dict, inference: dict, limits: dict, recipe: dict, quick: bool) -> dict:
    """Medians per variant, ratios, and the recipe's physical limit (its counted FLOPs at the measured matmul peak)."""
    recipe_total = recipe["prefix"] + recipe["train"] + recipe["evaluate"]
    rows = {}
    for variant, measured in runs.items():
        estimates = [extrapolate(r) for r in measured]
        median = {key: statistics.median(e[key] for e in estimates) for key in ("wall", "setup", "cache", "train", "evaluate")}
        peak = limits["bf16" if variant.endswith("_bf16") else "fp32"]
        train_flops_per_s = statistics.median(e["train_flops"] / e["train"] for e in estimates)
        rows[variant] = {
            "wall_s": median["wall"],
            "setup_s": median["setup"],
            "cache_s": median["cache"],
            "train_loop_s": median["train"],
            "evaluate_s": median["evaluate"],
            "examples_per_s": FULL_STEPS * 8 / median["train"],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in measured),
            "train_flops_per_s": train_flops_per_s,
            "train_memory_floor_s": statistics.median(e["train_memory_bytes"] for e in estimates) / limits["bandwidth"],
            "accuracy": measured[0]["accuracy"],
            "all_walls_s": [e["wall"] for e in estimates],
            "limit_s": recipe_total / peak,
            "fraction_of_limit": recipe_total / peak / median["wall"],
            "matmul_peak_fraction": train_flops_per_s / peak,
        }
    infer = {
        v: {"messages_per_s": statistics.median(r["messages_per_second"] for r in m), "peak_rss_mib": max(r["peak_rss_mib"] for r in m)}
        for v, m in inference.items()
    }
    for name, row in rows.items():
        reference = "transformers_bf16" if name.endswith("_bf16") and "transformers_bf16" in rows else "transformers"
        row["speedup_vs_transformers"] = rows["transformers"]["wall_s"] / row["wall_s"]
        row["speedup_vs_same_precision_transformers"] = rows[reference]["wall_s"] / row["wall_s"]
        if "transformers_padded" in rows:
            row["speedup_vs_transformers_padded"] = rows["transformers_padded"]["wall_s"] / row["wall_s"]
    ours, bf16 = rows["hf_spam"], rows.get("hf_spam_bf16")
    return {
        "quick": quick,
        "machine": {
            "threads": torch.get_num_threads(),
            "matmul_peak_gflops": limits["fp32"] / 1e9,
            "bf16_matmul_peak_gflops": limits["bf16"] / 1e9,
            "copy_bandwidth_gb_s": limits["bandwidth"] / 1e9,
            "torch": torch.__version__,
        },
        "recipe_flops": recipe,
        "variants": rows,
        "inference": infer,
        "train_speedup_vs_transformers": ours["speedup_vs_transformers"],
        "train_speedup_vs_transformers_padded": ours.get("speedup_vs_transformers_padded"),
        "book_exact_speedup_vs_transformers": rows["hf_spam_book"]["speedup_vs_transformers"] if "hf_spam_book" in rows else None,
        "inference_speedup_vs_pipeline_batched": infer["hf_spam"]["messages_per_s"] / infer["pipeline_batched"]["messages_per_s"],
        "inference_speedup_vs_pipeline": infer["hf_spam"]["messages_per_s"] / infer["pipeline"]["messages_per_s"],
        "recipe_fraction_of_limit": ours["fraction_of_limit"],
        "train_matmul_peak_fraction": ours["matmul_peak_fraction"],
        # quick: the test accuracies of the slice (80 messages after 20 steps), a smoke check only
        "bf16_test_accuracy_delta": bf16["accuracy"]["test"] - ours["accuracy"]["test"] if bf16 else None,
        "bf16_speedup_vs_fp32": ours["wall_s"] / bf16["wall_s"] if bf16 else None,
        "bf16_recipe_fraction_of_limit": bf16["fraction_of_limit"] if bf16 else None,
    }


def format_table(results: dict) -> str:
    machine = results["machine"]
    scope = "quick slice, extrapolated to the work unit" if results["quick"] else "full work unit"
    lines = [
        f"Book recipe on gpt2-small (124M, random weights, seed {results['seed']}), {scope}; matmul peak {machine['matmul_peak_gflops']:.1f} GFLOP/s fp32, "
        f"{machine['bf16_matmul_peak_gflops']:.1f} bf16; copy {machine['copy_bandwidth_gb_s']:.1f} GB/s; {machine['threads']} threads",
        "| variant | wall s | setup s | prefix cache s | train loop s | evaluate s | peak RSS MiB | x transformers | train GFLOP/s | "
        "% of matmul peak | limit s | % of limit | test acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["variants"].items():
        accuracy = row["accuracy"].get("test")
        lines.append(
            f"| {name} | {row['wall_s']:.1f} | {row['setup_s']:.1f} | {row['cache_s']:.1f} | {row['train_loop_s']:.1f} | {row['evaluate_s']:.1f} | "
            f"{row['peak_rss_mib']:.0f} | {row['speedup_vs_transformers']:.2f} | {row['train_flops_per_s'] / 1e9:.1f} | "
            f"{row['matmul_peak_fraction'] * 100:.0f} % | {row['limit_s']:.1f} | {row['fraction_of_limit'] * 100:.0f} % | "
            f"{accuracy:.4f}{' (slice)' if results['quick'] else ''} |"
        )
    lines += ["", "| inference, 300 test messages | messages/s | peak RSS MiB |", "|---|---|---|"]
    labels = {
        "hf_spam": "hf_spam predict_proba",
        "pipeline_batched": "transformers pipeline, batch_size=32",
        "pipeline": "transformers pipeline, batch 1",
    }
    lines += [f"| {labels[name]} | {row['messages_per_s']:.1f} | {row['peak_rss_mib']:.0f} |" for name, row in results["inference"].items()]
    lines.append("")
    lines.append(
        f"train speedup {results['train_speedup_vs_transformers']:.2f}x vs transformers with dynamic padding, "
        f"inference speedup {results['inference_speedup_vs_pipeline_batched']:.2f}x vs pipeline(batch_size=32), "
        f"whole recipe at {results['recipe_fraction_of_limit'] * 100:.0f} % of its FLOP limit"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
