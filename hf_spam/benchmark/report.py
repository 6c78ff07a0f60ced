"""From the runs to the figures: each quick run scaled to the work unit, medians, ratios, the fraction of the
FLOP limit, and the table ``hf-spam benchmark`` prints."""

from __future__ import annotations

import statistics

import torch

from .recipe import FULL_EXAMPLES, FULL_STEPS


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


def inference_from_serving(serving: dict) -> dict:
    """The inference section's runs taken from the serving section's (``--quick`` on GPT-2 small): hf_spam's eager
    ``predict_proba`` and ``pipeline(batch_size=32)`` there are the same calls on the same 300 messages."""
    same_calls = {"hf_spam": "eager", "pipeline_batched": "pipeline_batched"}
    return {ours: serving[backend] for ours, backend in same_calls.items() if serving.get(backend)}


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
    ours, bf16 = rows.get("hf_spam", {}), rows.get("hf_spam_bf16")  # a failed variant is left out (orchestrate's ``failed``)

    def inference_ratio(name: str) -> float | None:
        return infer["hf_spam"]["messages_per_s"] / infer[name]["messages_per_s"] if {"hf_spam", name} <= infer.keys() else None

    return {
        "quick": quick,
        "machine": {
            "threads": torch.get_num_threads(),
            "matmul_peak_gflops": limits["fp32"] / 1e9,
            "bf16_matmul_peak_gflops": limits["bf16"] / 1e9 if limits["bf16"] else None,
            "copy_bandwidth_gb_s": limits["bandwidth"] / 1e9,
            "torch": torch.__version__,
        },
        "recipe_flops": recipe,
        "variants": rows,
        "inference": infer,
        "train_speedup_vs_transformers": ours.get("speedup_vs_transformers"),
        "train_speedup_vs_transformers_padded": ours.get("speedup_vs_transformers_padded"),
        "book_exact_speedup_vs_transformers": rows["hf_spam_book"]["speedup_vs_transformers"] if "hf_spam_book" in rows else None,
        "inference_speedup_vs_pipeline_batched": inference_ratio("pipeline_batched"),
        "inference_speedup_vs_pipeline": inference_ratio("pipeline"),
        "recipe_fraction_of_limit": ours.get("fraction_of_limit"),
        "train_matmul_peak_fraction": ours.get("matmul_peak_fraction"),
        # quick: the test accuracies of the slice (80 messages after 20 steps), a smoke check only
        "bf16_test_accuracy_delta": bf16["accuracy"]["test"] - ours["accuracy"]["test"] if bf16 and ours else None,
        "bf16_speedup_vs_fp32": ours["wall_s"] / bf16["wall_s"] if bf16 and ours else None,
        "bf16_recipe_fraction_of_limit": bf16["fraction_of_limit"] if bf16 else None,
    }


def format_table(results: dict) -> str:
    machine = results["machine"]
    scope = "quick slice, extrapolated to the work unit" if results["quick"] else "full work unit"
    bf16_peak = f"{machine['bf16_matmul_peak_gflops']:.1f}" if machine["bf16_matmul_peak_gflops"] else "not measured (no bf16 run)"
    lines = [
        f"Book recipe on gpt2-small (124M, random weights, seed {results['seed']}), {scope}; matmul peak "
        f"{machine['matmul_peak_gflops']:.1f} GFLOP/s fp32, "
        f"{bf16_peak} bf16; copy {machine['copy_bandwidth_gb_s']:.1f} GB/s; {machine['threads']} threads",
        "| variant | wall s | setup s | prefix cache s | train loop s | evaluate s | peak RSS MiB | x transformers | train GFLOP/s | "
        "% of matmul peak | limit s | % of limit | test acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["variants"].items():
        accuracy = row["accuracy"].get("test")
        lines.append(
            f"| {name} | {row['wall_s']:.1f} | {row['setup_s']:.1f} | {row['cache_s']:.1f} | {row['train_loop_s']:.1f} | "
            f"{row['evaluate_s']:.1f} | "
            f"{row['peak_rss_mib']:.0f} | {row['speedup_vs_transformers']:.2f} | {row['train_flops_per_s'] / 1e9:.1f} | "
            f"{row['matmul_peak_fraction'] * 100:.0f} % | {row['limit_s']:.1f} | {row['fraction_of_limit'] * 100:.0f} % | "
            f"{accuracy:.4f}{' (slice)' if results['quick'] else ''} |"
        )
    lines += [f"Not run: {name}: {why}" for name, why in results.get("skipped_variants", {}).items()]
    lines += ["", "| inference, 300 test messages | messages/s | peak RSS MiB |", "|---|---|---|"]
    labels = {
        "hf_spam": "hf_spam predict_proba",
        "pipeline_batched": "transformers pipeline, batch_size=32",
        "pipeline": "transformers pipeline, batch 1",
    }
    lines += [f"| {labels[name]} | {row['messages_per_s']:.1f} | {row['peak_rss_mib']:.0f} |" for name, row in results["inference"].items()]
    lines.append("")
    figures = (
        results["train_speedup_vs_transformers"],
        results["inference_speedup_vs_pipeline_batched"],
        results["recipe_fraction_of_limit"],
    )
    if None not in figures:
        lines.append(
            f"train speedup {figures[0]:.2f}x vs transformers with dynamic padding, inference speedup {figures[1]:.2f}x vs "
            f"pipeline(batch_size=32), whole recipe at {figures[2] * 100:.0f} % of its FLOP limit"
        )
    return "\n".join(lines)
