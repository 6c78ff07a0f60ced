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
by 650/20, evaluation by messages; hf_spam's prefix cache is built for all 1,494 messages and timed as is.
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
from collections.abc import Sequence
from pathlib import Path

from .machine import NATIVE_BF16_FLAGS, machine_limits, native_bf16
from .recipe import recipe_flops
from .report import summarize
from .runs import INFERENCE, VARIANTS, build_checkpoint
from .serving import build_serving_models, summarize_serving


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
) -> dict:
    """Every variant's runs (``transformers``, the reference, always), alternating over ``rounds`` (default: 2
    quick, 1 full), then inference, each run in a worker process of its own; the figures of :func:`summarize`.
    ``variants`` defaults to :func:`default_variants`; the ones it leaves out are in ``skipped_variants``. Then the
    serving section (``serving``: every backend on the same weights, the random GPT-2 small's or ``serving_model``'s;
    one round when ``quick``); ``training=False`` runs that section alone."""
    skipped: dict[str, str] = {}
    if variants is None:
        variants, skipped = default_variants(native_bf16())
    rounds = rounds or (2 if quick else 1)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    recipe = recipe_flops(data_file)  # first: a failure here must not cost the timed runs
    times_bf16 = training and any(v.endswith("_bf16") for v in variants)
    before = machine_limits(bf16=times_bf16)
    with tempfile.TemporaryDirectory() as folder:
        build_checkpoint(Path(folder), seed)
        common = [folder, data_file, str(seed), str(quick), str(baseline_reuses_freed_memory)]
        runs = {v: [] for v in VARIANTS if v in variants or v == "transformers"} if training else {}
        for _ in range(rounds):
            for variant in runs:
                runs[variant].append(_worker(variant, common, env))
        inference = {v: [] for v in INFERENCE} if training else {}
        for _ in range(max(rounds, 2)):
            for variant in inference:
                inference[variant].append(_worker(f"infer_{variant}", common, env))
        models, skipped_backends = build_serving_models(folder, Path(folder) / "serving", seed, serving_model)
        serving = {backend: [] for backend in models}
        for _ in range(1 if quick else max(rounds, 2)):
            for backend, model in models.items():
                serving[backend].append(_worker(f"serve_{backend}", [model["path"], *common[1:]], env))
    after = machine_limits(bf16=times_bf16)
    # the machine's speed drifts: the higher peak gives the lower fraction
    limits = {name: None if before[name] is None else max(before[name], after[name]) for name in before}
    results = summarize(runs, inference, limits, recipe, quick) if training else {"quick": quick}
    limit_seconds = None if serving_model else recipe["classify_test"] / limits["fp32"]  # the count is gpt2-small's
    section = summarize_serving(serving, models, skipped_backends, limit_seconds)
    results["serving"] = section
    results |= {key: value for key, value in section.items() if key not in ("backends", "skipped_backends")}
    results["seed"] = seed
    results["baseline_reuses_freed_memory"] = baseline_reuses_freed_memory
    results["skipped_variants"] = skipped
    return results


def default_variants(has_native_bf16: bool | None) -> tuple[list[str], dict[str, str]]:
    """Every variant, less the ``*_bf16`` ones on a CPU known to lack hardware bf16 (there they time torch's
    emulation, not bf16 training, and take most of the run: one ``transformers_bf16`` run of ``--quick`` took over
    14 minutes on an AVX2-only CPU); (variants, {skipped variant: why})."""
    if has_native_bf16 is not False:
        return list(VARIANTS), {}
    why = (
        f"this CPU has no hardware bf16 ({' or '.join(NATIVE_BF16_FLAGS)} in /proc/cpuinfo), so bf16 would time torch's "
        "emulation; name the variant in --variants to time it anyway"
    )
    return [v for v in VARIANTS if not v.endswith("_bf16")], {v: why for v in VARIANTS if v.endswith("_bf16")}


def _worker(variant: str, common: list[str], env: dict) -> dict:
    """One run in a fresh process (``python -m hf_spam.benchmark.worker``): its peak memory is its own."""
    command = [sys.executable, "-m", "hf_spam.benchmark.worker", variant, *common]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise RuntimeError(f"benchmark worker {variant} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
