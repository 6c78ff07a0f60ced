"""The measurements of ``scripts/benchmark_model.py [--generate] [--checkpointing]``.

Two measurements of the model as a transformers model, on GPT-2 shapes with random weights (speed and
memory do not depend on the weights' values; pretrained ones cannot be downloaded here):

``--generate``: greedy ``generate()`` of 200 new tokens after a 20-token prompt on the gpt2-small
shape, with the KV cache (the default) and without (``use_cache=False``, every step re-reads the whole
sequence, as the book's ``generate_text_simple``), against transformers' ``GPT2LMHeadModel`` with its
cache on the same weights. The tokens must agree; the best of ``--repeats`` runs is reported.

``--checkpointing``: peak memory of one training step (forward and backward, every layer trainable,
batch 8 x ``--tokens``) of the classifier on the gpt2-medium and gpt2-large shapes, with and without
``activation_checkpointing_enable()`` (transformers 5.24's name for gradient checkpointing). Each
case runs in its own process and reports its peak resident memory (``VmHWM``), so each peak is its own,
with glibc's mmap threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``): every tensor larger than that
gets its own mapping, returned when freed, so the peak is that of the tensors alive at once. With
glibc's default (a threshold that rises as large blocks are freed) freed activations stay in the heap
and the peak measures the allocator's history as much as the model. Checkpointing trades the activations kept for the backward
pass (which grow with batch x tokens) for a second forward; the gradients of every weight stay, so at
short sequences, where they outweigh the activations, it saves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from ..models.gpt.configuration_gpt import GPTConfig
from ..models.gpt.modeling_gpt import GPTForCausalLM, GPTForSequenceClassification
from .machine import peak_rss_mib


def best_time(function, repeats: int) -> tuple[float, torch.Tensor]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure_generation(new_tokens: int = 200, prompt_tokens: int = 20, repeats: int = 3) -> dict:
    """Seconds for greedy ``generate()``: hf_spam with and without its KV cache, GPT-2 with its cache."""
    torch.manual_seed(0)
    ours = GPTForCausalLM(GPTConfig.from_preset("gpt2-small", eos_token_id=None)).eval()
    theirs = ours.to_gpt2().eval()
    prompt = torch.randint(0, 50257, (1, prompt_tokens), generator=torch.Generator().manual_seed(1))
    settings = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 50256}
    with torch.inference_mode():
        cached, cached_ids = best_time(lambda: ours.generate(prompt, **settings), repeats)
        uncached, uncached_ids = best_time(lambda: ours.generate(prompt, use_cache=False, **settings), repeats)
        gpt2, gpt2_ids = best_time(lambda: theirs.generate(prompt, **settings), repeats)
    if not (torch.equal(cached_ids, uncached_ids) and torch.equal(cached_ids, gpt2_ids)):
        raise AssertionError("the three ways of decoding disagree on the tokens")
    return {
        "new_tokens": new_tokens,
        "prompt_tokens": prompt_tokens,
        "hf_spam_cache_s": cached,
        "hf_spam_no_cache_s": uncached,
        "gpt2_cache_s": gpt2,
        "cache_speedup": uncached / cached,
    }


def training_step_peak(preset: str, checkpointing: bool, batch: int = 8, tokens: int = 128) -> dict:
    """One forward and backward of the classifier, every parameter trainable; this process's peak memory."""
    torch.manual_seed(0)
    model = GPTForSequenceClassification(GPTConfig.from_preset(preset)).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    ids = torch.randint(0, 50257, (batch, tokens))
    before = peak_rss_mib()
    start = time.perf_counter()
    model(ids, labels=torch.zeros(batch, dtype=torch.long)).loss.backward()
    return {
        "preset": preset,
        "tokens": tokens,
        "checkpointing": checkpointing,
        "step_s": time.perf_counter() - start,
        "weights_peak_mib": before,
        "peak_mib": peak_rss_mib(),
    }


def measure_checkpointing(presets: list[str], tokens: int) -> list[dict]:
    """:func:`training_step_peak` of each preset without and with checkpointing, each in a process of its own
    (``python -m hf_spam.benchmark.model PRESET CHECKPOINTING TOKENS``) under a fixed mmap threshold."""
    rows = []
    for preset in presets:
        for checkpointing in (False, True):
            worker = [sys.executable, "-m", "hf_spam.benchmark.model", preset, str(checkpointing), str(tokens)]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
            rows.append(json.loads(subprocess.run(worker, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1]))
    return rows


if __name__ == "__main__":  # one training step of measure_checkpointing, in its own process
    preset, checkpointing, tokens = sys.argv[1:]
    print(json.dumps(training_step_peak(preset, checkpointing == "True", tokens=int(tokens))))
