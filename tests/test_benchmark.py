"""The benchmark's arithmetic: the recipe's FLOP count against the transformer's closed-form FLOPs, and how
a quick slice is scaled to the work unit and turned into ratios and a fraction of the physical limit."""

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from hf_spam import GPTForSequenceClassification, save_with_tokenizer
from hf_spam.benchmark import default_variants, orchestrate
from hf_spam.benchmark.machine import native_bf16
from hf_spam.benchmark.recipe import recipe_flops
from hf_spam.benchmark.report import extrapolate, format_table, inference_from_serving, summarize
from hf_spam.benchmark.runs import VARIANTS
from hf_spam.benchmark.serving import format_serving, summarize_serving
from hf_spam.data import load_sms_spam, tokenize
from tests.helpers import tiny_config


@pytest.mark.slow
def test_recipe_flops_are_the_closed_form_count(sms_file):
    """GPT-2 small, d = 768, h = 12 heads: a block at length T does 24 T d^2 in its six matrix products plus 4 T^2 d in
    attention. The pooled top forms no keys or values: its six products plus the query through W_key and the context
    through W_value run for one position (24 d^2, with the 2-class head's 4 d), and that query meets the T positions
    in two (h, d) x (d, T) products (4 h d T). Training is forward + backward: 3x the one-position work; the two
    products with the positions need the gradient of one factor only (the prefix's output is frozen): 2x."""
    d, h = 768, 12
    splits = tokenize(load_sms_spam(sms_file), "dynamic").splits
    lengths = {name: [len(ids) for ids in split["input_ids"]] for name, split in splits.items()}
    every = [t for split in lengths.values() for t in split]
    distinct = [len(ids) for ids in {tuple(ids) for split in splits.values() for ids in split["input_ids"]}]
    assert len(distinct) < len(every)  # repeated messages: their prefix is computed once

    def top(t: int) -> int:
        return 24 * d * d + 4 * d + 4 * h * d * t

    def trained(t: int) -> int:
        return 3 * (24 * d * d + 4 * d) + 2 * 4 * h * d * t

    counted = recipe_flops(str(sms_file))
    assert counted["tokens"] == sum(every)
    assert counted["prefix"] == sum(11 * (24 * t * d * d + 4 * t * t * d) for t in distinct)
    assert counted["evaluate"] == sum(top(t) for t in every)
    # serving: each test message through all 12 blocks once (11 whole, the top at the pooled position)
    assert counted["classify_test"] == sum(11 * (24 * t * d * d + 4 * t * t * d) + top(t) for t in lengths["test"])
    examples = 5 * (len(lengths["train"]) // 8) * 8  # 650 steps of 8
    assert counted["train"] == pytest.approx(examples * sum(trained(t) for t in lengths["train"]) / len(lengths["train"]), rel=1e-12)


def quick_run(variant: str, cache: float) -> dict:
    return {
        "variant": variant,
        "quick": True,
        "steps": 20,
        "timings": {"setup": 2.0, "train": 1.0, "steady_step": 0.04, "evaluate": 0.5} | ({"cache": cache} if cache else {}),
        "examples_evaluated": 160,
        "examples_cached": 1494 if cache else 0,
        "accuracy": {"validation": 0.75, "test": 0.8},
        "train_flops": 1e12,
        "train_memory_bytes": 6e9,
        "peak_rss_mib": 100.0,
    }


def test_quick_runs_scale_to_the_work_unit_and_give_the_issue_figures():
    ours = extrapolate(quick_run("hf_spam", cache=30.0))
    # the 20 steps as measured plus 630 at the steady step time, evaluation x 1494/160, the whole cache as measured
    assert (
        ours["train"] == pytest.approx(1.0 + 630 * 0.04) and ours["evaluate"] == pytest.approx(0.5 * 1494 / 160) and ours["cache"] == 30.0
    )
    assert ours["wall"] == pytest.approx(2.0 + 30.0 + 26.2 + 0.5 * 1494 / 160)

    runs = {"hf_spam": [quick_run("hf_spam", 30.0)], "transformers": [quick_run("transformers", 0.0)]}
    runs["transformers"][0]["timings"] |= {"train": 10.0, "steady_step": 0.5}
    runs["hf_spam_bf16"] = [quick_run("hf_spam_bf16", 10.0)]
    runs["hf_spam_bf16"][0]["accuracy"]["test"] = 0.79
    inference = {"hf_spam": [{"messages_per_second": 50.0, "peak_rss_mib": 1.0}]}
    inference |= {name: [{"messages_per_second": 20.0, "peak_rss_mib": 1.0}] for name in ("pipeline", "pipeline_batched")}
    limits = {"fp32": 300e9, "bf16": 2000e9, "bandwidth": 25e9}
    recipe = {"prefix": 6e12, "train": 2e12, "evaluate": 1e12, "tokens": 1}
    results = summarize(runs, inference, limits, recipe, quick=True)

    walls = {name: extrapolate(measured[0])["wall"] for name, measured in runs.items()}
    assert results["train_speedup_vs_transformers"] == pytest.approx(walls["transformers"] / walls["hf_spam"])
    assert results["recipe_fraction_of_limit"] == pytest.approx(9e12 / 300e9 / walls["hf_spam"])
    assert results["bf16_recipe_fraction_of_limit"] == pytest.approx(9e12 / 2000e9 / walls["hf_spam_bf16"])
    assert results["bf16_test_accuracy_delta"] == pytest.approx(-0.01)
    assert results["inference_speedup_vs_pipeline_batched"] == pytest.approx(2.5)
    assert results["train_matmul_peak_fraction"] == pytest.approx(1e12 * 32.5 / 26.2 / 300e9)  # FLOPs scale with the steps
    assert results["variants"]["hf_spam"]["train_memory_floor_s"] == pytest.approx(6e9 * 32.5 / 25e9)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
@pytest.mark.slow
def test_a_workers_peak_memory_is_its_own_not_its_parents():
    """Workers are forked from the orchestrator, which holds ~1.6 GiB by then; a worker's peak must not include it."""
    held = bytearray(1 << 30)
    held[:: 1 << 12] = b"\x01" * (len(held) >> 12)  # touch every page: 1 GiB resident in this process
    code = "from hf_spam.benchmark.machine import peak_rss_mib; print(peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 20 < child < 1024, child
    del held


def test_the_bf16_variants_are_left_out_on_a_cpu_without_hardware_bf16():
    """On an AVX2-only CPU torch emulates bf16 matmuls, and one ``transformers_bf16`` run of ``--quick`` took over 14
    minutes: by default the benchmark leaves the ``*_bf16`` variants out there, and says why."""
    amd_epyc = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
    xeon_amx = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert native_bf16(amd_epyc) is False and native_bf16(xeon_amx) is True and native_bf16("no flags here") is None
    variants, skipped = default_variants(False)
    assert variants == [v for v in VARIANTS if not v.endswith("_bf16")] and set(skipped) == {"hf_spam_bf16", "transformers_bf16"}
    assert "no hardware bf16" in skipped["transformers_bf16"] and "--variants" in skipped["transformers_bf16"]
    assert default_variants(True) == default_variants(None) == (list(VARIANTS), {})  # known, or unknown: all of them
    # --quick: hf_spam against transformers only, a check of minutes (the padding comparisons took most of its time)
    variants, skipped = default_variants(False, quick=True)
    assert variants == ["hf_spam", "transformers"] and set(skipped) == {*VARIANTS} - {"hf_spam", "transformers"}
    assert default_variants(True, quick=True)[0] == ["hf_spam", "hf_spam_bf16", "transformers", "transformers_bf16"]


def serve_run(speed: float, probs: list[list[float]]) -> dict:
    return {"messages_per_second": speed, "p50_ms": 10.0, "p95_ms": 20.0, "probs": probs, "labels": [0, 1, 1, 0], "peak_rss_mib": 1.0}


def test_quick_takes_its_inference_figures_from_the_serving_runs():
    """--quick does not time eager and pipeline(batch_size=32) twice: the serving section's runs (the same calls on
    the same messages) give the inference table and its ratio; batch 1 is not timed apart."""
    serving = {"pipeline_batched": [serve_run(10.0, [])], "eager": [serve_run(25.0, [])], "onnx_int8": [serve_run(40.0, [])]}
    inference = inference_from_serving(serving)
    assert inference == {"hf_spam": serving["eager"], "pipeline_batched": serving["pipeline_batched"]}
    runs = {variant: [quick_run(variant, cache)] for variant, cache in (("hf_spam", 30.0), ("transformers", 0.0))}
    limits, recipe = {"fp32": 300e9, "bf16": None, "bandwidth": 25e9}, {"prefix": 6e12, "train": 2e12, "evaluate": 1e12, "tokens": 1}
    results = summarize(runs, inference, limits, recipe, quick=True) | {"seed": 123}
    assert results["inference_speedup_vs_pipeline_batched"] == pytest.approx(2.5) and results["inference_speedup_vs_pipeline"] is None
    table = format_table(results)
    assert "| hf_spam predict_proba | 25.0 |" in table and "batch 1" not in table
    assert inference_from_serving({"eager": [serve_run(25.0, [])]}) == {"hf_spam": serving["eager"]}  # no reference: no ratio


def test_the_serving_section_compares_each_backend_with_eager_fp32_and_the_labels():
    eager = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]  # right on 3 of 4
    int8 = [[0.85, 0.15], [0.3, 0.7], [0.45, 0.55], [0.7, 0.3]]  # one label flipped (the third: now right)
    serving = {
        "pipeline_batched": [serve_run(10.0, eager), serve_run(12.0, eager)],
        "eager": [serve_run(20.0, eager)],
        "onnx_fp32": [serve_run(33.0, [[p + 1e-6 for p in row] for row in eager])],
        "onnx_int8": [serve_run(60.0, int8)],
    }
    models = {name: {"path": name} for name in serving} | {"onnx_int8": {"path": "x", "export_s": 40.0, "bytes": 2e8}}
    section = summarize_serving(serving, models, {"openvino_fp32": "not installed"}, limit_seconds=2.0)
    assert section["best_backend"] == "onnx_int8"
    assert section["serving_speedup_vs_pipeline_batched"] == pytest.approx(60.0 / 11.0)  # the reference's median
    assert section["onnx_fp32_speedup_vs_pipeline_batched"] == pytest.approx(3.0)
    assert section["int8_label_agreement"] == pytest.approx(0.75)
    assert section["int8_test_accuracy_delta"] == pytest.approx(25.0)  # 4/4 against 3/4, in points
    assert section["fp32_exports_max_abs_prob_diff"] == pytest.approx(1e-6, rel=0.05)  # float32 tensors
    assert section["backends"]["onnx_int8"]["max_abs_prob_diff"] == pytest.approx(0.15, rel=1e-6)
    assert section["backends"]["eager"]["fraction_of_fp32_limit"] == pytest.approx(2.0 * 20.0 / 4)  # limit s x messages/s / messages
    assert "not installed" in format_serving(section)


@pytest.mark.slow
def test_a_backend_that_fails_is_reported_and_the_others_are_still_measured(sms_file, tmp_path, monkeypatch, capsys):
    """Issue: one export refused on a Xeon lost 18.5 minutes of measured figures. Here the ONNX export is damaged
    between runs (through the progress callback, after eager's run): its run fails, and the failure is one line
    under `failed`; eager and the pipeline are measured and summarized, and every progress write was a partial result."""
    folder = tmp_path / "model"
    torch.manual_seed(0)
    save_with_tokenizer(GPTForSequenceClassification(tiny_config(id2label={0: "ham", 1: "spam"}, context_length=1024)).eval(), folder)
    seen = []

    def progress(raw):
        seen.append(raw["partial"])
        measured = [backend for backend, runs in raw.get("serving", {}).items() if runs]
        if measured == ["pipeline_batched", "eager"]:
            for path in tmp_path.glob("*/serving/onnx_fp32/model.onnx*"):  # at the same size: only the checksums can tell
                data = bytearray(path.read_bytes())
                data[len(data) // 2] ^= 0xFF
                path.write_bytes(bytes(data))

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where orchestrate keeps its models, to reach the export
    results = orchestrate(str(sms_file), quick=True, training=False, serving_model=str(folder), backends=["onnx_fp32"], progress=progress)
    assert list(results["failed"]) == ["serve_onnx_fp32"], results["failed"]
    assert "does not match its checksum" in results["failed"]["serve_onnx_fp32"]
    assert "\n" not in results["failed"]["serve_onnx_fp32"]
    assert set(results["serving"]["backends"]) == {"pipeline_batched", "eager"}
    others = ("onnx_int8", "openvino_fp32", "openvino_int8", "openvino_bf16")
    assert results["serving"]["skipped_backends"] == {b: "not among --backends" for b in others}
    assert results["serving_speedup_vs_pipeline_batched"] > 0 and seen and all(seen)
    assert "[torch.onnx]" not in capsys.readouterr().out, "the exporters' steps are not the benchmark's output"
