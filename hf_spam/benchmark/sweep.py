"""How the work unit's cost grows with message length and training-set size (``hf-spam benchmark --sweep``)."""

from __future__ import annotations

import functools
import time

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from ..models.gpt.configuration_gpt import GPTConfig
from ..models.gpt.modeling_gpt import GPTForSequenceClassification
from ..models.gpt.pooled_position import prefix
from ..training.model_setup import configure_trainable


def sweep(lengths: tuple[int, ...] = (32, 64, 120, 256), sizes: tuple[int, ...] = (1045, 10_000), reps: int = 3) -> list[dict]:
    """How the work unit's cost grows with message length and training-set size.

    Measures, at each padded length T (batch 8): one training step of hf_spam's cached top (last block
    + head, AdamW), one training step of transformers' GPT-2 (full forward, last-block backward, AdamW),
    one inference forward of each per message, and hf_spam's prefix cost per message. Then projects
    5 epochs + evaluation of train/validation/test (splits 70/10/20) for each training-set size.
    """

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
