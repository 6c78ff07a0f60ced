"""The serving section: classifying the 300 SMS test messages with the same weights on each backend, side by side.

``pipeline("text-classification", batch_size=32)`` on transformers' ``GPT2ForSequenceClassification`` (``to_gpt2()``
of the same classifier) is the reference; hf_spam's eager PyTorch (``predict_proba``: length-sorted batches) and the
exports of ``hf-spam export`` (ONNX Runtime float32 and int8; OpenVINO float32 and int8 where it is installed, and bf16
where the CPU computes bf16 natively) run
through ``hf_spam.serving.classifier.classify``, as ``hf-spam classify`` does. Each backend runs in a worker process of its
own; each reports messages/s at batch 32, the latency of one message at batch 1 (p50, p95), and its probabilities,
which :func:`summarize_serving` compares with eager float32's (label agreement, max |Δprob|) and with the labels
(test accuracy).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data import load_sms_spam
from ..errors import HfSpamError
from ..serving.classifier import classify, load_classifier
from .machine import peak_rss_mib

# backend: (export format, quantization[, precision]); "eager" is the saved PyTorch folder, "pipeline_batched" the reference
SERVING = {
    "pipeline_batched": None,
    "eager": None,
    "onnx_fp32": ("onnx", None),
    "onnx_int8": ("onnx", "int8"),
    "openvino_fp32": ("openvino", None),
    "openvino_int8": ("openvino", "int8"),
    "openvino_bf16": ("openvino", None, "bf16"),
}
LATENCY_MESSAGES = 60  # messages timed one at a time (batch 1) for p50/p95


def build_serving_models(
    checkpoint: str, folder: Path, seed: int = 123, model_dir: str | None = None, backends: Sequence[str] | None = None
) -> tuple[dict, dict, dict]:
    """The classifier on ``checkpoint``'s weights (or the one ``model_dir`` holds: a trained run, whose answers are not
    near ties as a random head's are), saved as ``hf-spam train`` saves it, its stock GPT-2 twin, and its exports (those
    ``backends`` names, default all); ({backend: {"path", "export_s", "bytes"}}, {backend left out: why}, {backend whose
    export failed: its one-line error})."""
    from ..models.gpt.modeling_gpt import GPTForSequenceClassification
    from ..serving.export import export_classifier, exporters_quiet
    from ..serving.runtime import MissingExtraError, NoNativeBf16Error
    from ..tokenizer import gpt2_tokenizer, save_with_tokenizer
    from .runs import _same_head

    if model_dir is None:
        model = GPTForSequenceClassification.from_gpt2(checkpoint, num_labels=2).eval()
        _same_head(model.out_head.weight, model.out_head.bias, seed)
    else:
        model = load_classifier(model_dir).model.float().eval()
    save_with_tokenizer(model, folder / "eager")
    model.to_gpt2().save_pretrained(folder / "pipeline_batched")
    gpt2_tokenizer().save_pretrained(folder / "pipeline_batched")
    models = {"pipeline_batched": {"path": str(folder / "pipeline_batched")}, "eager": {"path": str(folder / "eager")}}
    skipped, failed = {}, {}
    for backend, spec in SERVING.items():
        if spec is None:
            continue
        if backends is not None and backend not in backends:
            skipped[backend] = "not among --backends"
            continue
        try:
            with exporters_quiet(verbose=False):  # the exporters' ~35 lines each, none of them a measurement
                report = export_classifier(folder / "eager", folder / backend, *spec)
        except (MissingExtraError, NoNativeBf16Error) as error:
            skipped[backend] = str(error)
            continue
        except HfSpamError as error:  # e.g. an export whose check against PyTorch failed: the other backends go on
            failed[f"export_{backend}"] = str(error)
            continue
        models[backend] = {"path": str(folder / backend), "export_s": report["seconds"], "bytes": report["bytes"]}
    return models, skipped, failed


def time_serving(backend: str, model_dir: str, data_file: str) -> dict:
    """One backend on the test messages, in this process: throughput at batch 32, latency at batch 1, probabilities."""
    test = load_sms_spam(data_file)["test"]
    texts = list(test["text"])
    if backend == "pipeline_batched":
        from transformers import pipeline

        classifier = pipeline("text-classification", model=model_dir, top_k=None)
        run = lambda batch, size: classifier(batch, batch_size=size)  # noqa: E731
    else:
        classifier = load_classifier(model_dir)
        run = lambda batch, size: classify(classifier, batch, size)  # noqa: E731
    run(texts[:32], 32)  # warm-up: the runtimes plan their kernels on the first shapes
    started = time.perf_counter()
    results = run(texts, 32)
    seconds = time.perf_counter() - started
    latencies = []
    for text in texts[:LATENCY_MESSAGES]:
        start = time.perf_counter()
        run([text], 1)
        latencies.append(time.perf_counter() - start)
    names = [classifier.model.config.id2label[i] for i in range(classifier.model.config.num_labels)]
    if backend == "pipeline_batched":
        probs = [[next(e["score"] for e in row if e["label"] == name) for name in names] for row in results]
    else:
        probs = [[row["scores"][name] for name in names] for row in results]
    quantiles = statistics.quantiles(latencies, n=20)
    return {
        "backend": backend,
        "messages_per_second": len(texts) / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": quantiles[18] * 1000,
        "probs": probs,
        "labels": list(test["label"]),
        "peak_rss_mib": peak_rss_mib(),
    }


def summarize_serving(serving: dict, models: dict, skipped: dict, limit_seconds: float | None) -> dict:
    """Medians per backend; each against eager float32 (label agreement, max |Δprob|), the labels (test accuracy)
    and the reference (``pipeline_batched``); and the acceptance keys. ``limit_seconds``: the test messages' FLOPs
    at the fp32 matmul peak (``None``: not counted for this model)."""
    eager = torch.tensor(serving["eager"][0]["probs"])
    labels = torch.tensor(serving["eager"][0]["labels"])
    reference = statistics.median(r["messages_per_second"] for r in serving["pipeline_batched"])
    rows = {}
    for backend, runs in serving.items():
        probs = torch.tensor(runs[0]["probs"])
        speed = statistics.median(r["messages_per_second"] for r in runs)
        rows[backend] = {
            "messages_per_s": speed,
            "speedup_vs_pipeline_batched": speed / reference,
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p95_ms": statistics.median(r["p95_ms"] for r in runs),
            "fraction_of_fp32_limit": limit_seconds * speed / len(labels) if limit_seconds else None,
            "label_agreement": (probs.argmax(-1) == eager.argmax(-1)).float().mean().item(),
            "max_abs_prob_diff": (probs - eager).abs().max().item(),
            "test_accuracy": (probs.argmax(-1) == labels).float().mean().item(),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "export_s": models[backend].get("export_s"),
            "bytes": models[backend].get("bytes"),
        }
    exported = [name for name in rows if name not in ("pipeline_batched", "eager")]
    best = max(rows, key=lambda name: rows[name]["messages_per_s"] if name != "pipeline_batched" else 0)
    int8, fp32 = rows.get("onnx_int8"), rows.get("onnx_fp32")
    return {
        "backends": rows,
        "skipped_backends": skipped,
        "best_backend": best,
        "serving_speedup_vs_pipeline_batched": rows[best]["speedup_vs_pipeline_batched"],
        "onnx_fp32_speedup_vs_pipeline_batched": fp32["speedup_vs_pipeline_batched"] if fp32 else None,
        "int8_test_accuracy_delta": (int8["test_accuracy"] - fp32["test_accuracy"]) * 100 if int8 and fp32 else None,
        "int8_label_agreement": int8["label_agreement"] if int8 else None,
        "bf16_label_agreement": rows["openvino_bf16"]["label_agreement"] if "openvino_bf16" in rows else None,
        "fp32_exports_max_abs_prob_diff": max((rows[n]["max_abs_prob_diff"] for n in exported if n.endswith("fp32")), default=None),
    }


def format_serving(section: dict) -> str:
    lines = [
        "| serving, 300 test messages | messages/s (batch 32) | x pipeline(batch_size=32) | p50 ms | p95 ms (batch 1) | "
        "% of fp32 FLOP limit | label agreement | max abs Δprob | test acc | export s | MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in section["backends"].items():
        export = f"{row['export_s']:.0f} | {row['bytes'] / 1e6:.0f}" if row["export_s"] is not None else "- | -"
        fraction = f"{row['fraction_of_fp32_limit'] * 100:.0f} %" if row["fraction_of_fp32_limit"] is not None else "-"
        lines.append(
            f"| {name} | {row['messages_per_s']:.1f} | {row['speedup_vs_pipeline_batched']:.2f} | "
            f"{row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
            f"{fraction} | {row['label_agreement'] * 100:.1f} % | {row['max_abs_prob_diff']:.2g} | "
            f"{row['test_accuracy']:.4f} | {export} |"
        )
    lines += [f"Not run: {name}: {why}" for name, why in section["skipped_backends"].items()]
    return "\n".join(lines)
