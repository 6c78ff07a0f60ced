"""The benchmark of ``hf-spam benchmark --data_file path/to/SMSSpamCollection --quick --json bench.json``.

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
by 650/20, evaluation by messages; hf_spam's prefix cache is built for all 1,494 messages and timed as is. It
times hf_spam and transformers only (and their bf16 variants where the CPU has bf16), and takes its inference
figures from the serving section's runs.
``--json`` holds every figure, the ratios and the recipe's FLOP limit (see ``recipe_flops``).

Modules: ``recipe`` (the work unit and its FLOPs), ``machine`` (the machine's limits, a process's peak
memory), ``runs`` (one timed run, in a worker process), ``report`` (scaling, medians, ratios, the
table), ``sweep`` (cost against message length and data size); :func:`orchestrate` runs them all.
``serving`` times classifying on every backend (PyTorch, and ``hf-spam export``'s ONNX Runtime and OpenVINO, float32
and int8) against ``pipeline(batch_size=32)``, with the same weights.
``model`` holds ``scripts/benchmark_model.py``'s measurements of the model itself (``generate()`` with and
without the KV cache, a training step's peak memory with and without checkpointing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .machine import NATIVE_BF16_FLAGS, machine_limits, native_bf16
from .recipe import recipe_flops
from .report import inference_from_serving, summarize
from .runs import INFERENCE, VARIANTS, build_checkpoint
from .serving import build_serving_models, summarize_serving

QUICK_LEAVES_OUT = ("hf_spam_book", "transformers_padded")


def orchestrate(
    data_file: str,
    *,
    quick: bool = False,
    rounds: int | None = None,
    variants: Sequence[str] | None = None,
    seed: int = 123,
    baseline_reuses_freed_memory: bool = False,
    training: bool = True,
    serving_model: str | None = None,
    backends: Sequence[str] | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Every variant's runs (``transformers``, the reference, always), alternating over ``rounds`` (default 1),
    then inference, each run in a worker process of its own; the figures of :func:`summarize`.
    ``variants`` defaults to :func:`default_variants`; the ones it leaves out are in ``skipped_variants``. Then the
    serving section (``serving``: every backend, or those ``backends`` names, on the same weights, the random GPT-2
    small's or ``serving_model``'s; one round when ``quick``); ``training=False`` runs that section alone.

    A variant or backend that fails is reported with its one-line error under ``failed`` and left out of the
    figures; the others are still measured. ``progress`` receives what has been measured so far after every run
    (``partial: True``), so that an interrupted benchmark keeps it."""
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    if variants is None:
        variants, skipped = default_variants(native_bf16(), quick)
    rounds = rounds or 1
    # --quick on GPT-2 small: the serving section's eager and pipeline(batch_size=32) runs are the inference figures
    # (the same calls on the same 300 messages), so they are not run twice; batch 1 is its latency column there
    inference_runs = training and not (quick and serving_model is None)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    # only the training table and the limit of serving GPT-2 small use GPT-2 small, its FLOP count and this machine's
    # peaks (serving another model alone needs none of them); the count first: a failure there must not cost the runs
    gpt2_small = training or not serving_model
    recipe = recipe_flops(data_file) if gpt2_small else None
    times_bf16 = training and any(v.endswith("_bf16") for v in variants)
    before = machine_limits(bf16=times_bf16) if gpt2_small else None
    raw: dict = {"partial": True, "failed": failed}

    def attempt(name: str, argv: list[str], into: list) -> None:
        """One worker run, its figures appended to ``into``; a failure is recorded in ``failed`` (its last line of
        error), not raised. Then ``progress`` sees everything measured so far."""
        try:
            into.append(_worker(name, argv, env))
        except WorkerError as error:
            failed[name] = str(error)
        if progress is not None:
            progress(raw)

    with tempfile.TemporaryDirectory() as folder:
        if gpt2_small:
            build_checkpoint(Path(folder), seed)
        common = [folder, data_file, str(seed), str(quick), str(baseline_reuses_freed_memory)]
        runs = raw["runs"] = {v: [] for v in VARIANTS if v in variants or v == "transformers"} if training else {}
        for _ in range(rounds):
            for variant in [v for v in runs if v not in failed]:
                attempt(variant, common, runs[variant])
        inference = raw["inference"] = {v: [] for v in INFERENCE} if inference_runs else {}
        for _ in range(max(rounds, 2)):
            for variant in [v for v in inference if f"infer_{v}" not in failed]:
                attempt(f"infer_{variant}", common, inference[variant])
        models, skipped_backends, failed_exports = build_serving_models(folder, Path(folder) / "serving", seed, serving_model, backends)
        failed |= failed_exports
        serving = raw["serving"] = {backend: [] for backend in models}
        for _ in range(1 if quick else max(rounds, 2)):
            for backend in [b for b in models if f"serve_{b}" not in failed]:
                attempt(f"serve_{backend}", [models[backend]["path"], *common[1:]], serving[backend])
    # the machine's speed drifts: the higher peak gives the lower fraction
    after = machine_limits(bf16=times_bf16) if gpt2_small else None
    limits = {name: None if before[name] is None else max(before[name], after[name]) for name in before} if gpt2_small else {}
    runs = {v: r for v, r in runs.items() if v not in failed}
    inference = {v: r for v, r in inference.items() if f"infer_{v}" not in failed}
    serving = {b: r for b, r in serving.items() if f"serve_{b}" not in failed}
    if training and not inference_runs:
        inference = inference_from_serving(serving)
    # the ratios are against the reference runs: without them there is no training table to give
    results = summarize(runs, inference, limits, recipe, quick) if training and "transformers" in runs else {"quick": quick}
    limit_seconds = None if serving_model else recipe["classify_test"] / limits["fp32"]  # the count is gpt2-small's
    if {"eager", "pipeline_batched"} <= serving.keys():  # the two every backend is compared with
        section = summarize_serving(serving, models, skipped_backends, limit_seconds)
        results |= {key: value for key, value in section.items() if key not in ("backends", "skipped_backends")}
    else:
        section = {"backends": {}, "skipped_backends": skipped_backends}
    results["serving"] = section
    results["failed"] = failed
    results["seed"] = seed
    results["baseline_reuses_freed_memory"] = baseline_reuses_freed_memory
    results["skipped_variants"] = skipped
    return results


def default_variants(has_native_bf16: bool | None, quick: bool = False) -> tuple[list[str], dict[str, str]]:
    """Every variant, less the ``*_bf16`` ones on a CPU known to lack hardware bf16 (there they time torch's
    emulation, not bf16 training, and take most of the run: BENCHMARKS.md), and under ``quick`` less the two that
    only compare ways of padding (``hf_spam_book``, ``transformers_padded``), so that ``--quick`` stays a check of
    minutes on a 2-core CPU;
    (variants, {skipped variant: why})."""
    skipped = {}
    if has_native_bf16 is False:
        why = (
            f"this CPU has no hardware bf16 ({' or '.join(NATIVE_BF16_FLAGS)} in /proc/cpuinfo), so bf16 would time torch's "
            "emulation; name the variant in --variants to time it anyway"
        )
        skipped |= {v: why for v in VARIANTS if v.endswith("_bf16")}
    if quick:
        skipped |= {v: "--quick times hf_spam against transformers only; name the variant in --variants" for v in QUICK_LEAVES_OUT}
    return [v for v in VARIANTS if v not in skipped], skipped


class WorkerError(RuntimeError):
    """A benchmark run that failed: the message is the last line its process wrote on stderr (an error's own line)."""


def _worker(variant: str, common: list[str], env: dict) -> dict:
    """One run in a fresh process (``python -m hf_spam.benchmark.worker``): its peak memory is its own."""
    command = [sys.executable, "-m", "hf_spam.benchmark.worker", variant, *common]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        raise WorkerError(lines[-1].strip() if lines else f"exit status {out.returncode}, nothing on stderr")
    return json.loads(out.stdout.strip().splitlines()[-1])
