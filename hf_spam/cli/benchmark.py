"""Side-by-side timing of the book recipe: hf_spam's default path, hf_spam in book-exact mode, and transformers'
``GPT2ForSequenceClassification`` + ``Trainer`` with per-batch padding (the reference of the ratios) and padded
to 120 as the book; ``*_bf16`` variants under ``--bf16``; plus inference on the test messages against
``pipeline``. What each variant runs, the work unit and how ``--quick`` scales to it: ``hf_spam.benchmark``.

examples:
  hf-spam benchmark --data_file path/to/SMSSpamCollection --quick --json bench.json
  hf-spam benchmark --data_file path/to/SMSSpamCollection --variants hf_spam --rounds 1
  hf-spam benchmark --data_file path/to/SMSSpamCollection --serving_only --json serving.json
  hf-spam benchmark --data_file path/to/SMSSpamCollection --serving_only --backends onnx_fp32 onnx_int8
  hf-spam benchmark --sweep                          # cost against message length and training-set size
"""

from __future__ import annotations

import argparse
import json

from ..benchmark import orchestrate
from ..benchmark.report import format_table
from ..benchmark.runs import VARIANTS
from ..benchmark.serving import SERVING, format_serving
from ..benchmark.sweep import format_sweep, sweep
from ..models.gpt.model_checksums import atomic_write_text
from .common import Parser, log_warnings, report_errors


def parser() -> Parser:
    parser = Parser("benchmark", __doc__)
    parser.add_option("--data_file", help="SMSSpamCollection (or the UCI zip); needed except for --sweep")
    parser.add_option(
        "--quick",
        action="store_true",
        help="hf_spam against transformers on a fixed slice, extrapolated, then one round of the serving section, whose eager "
        "and pipeline(batch_size=32) runs give the inference figures (timings per machine: BENCHMARKS.md)",
    )
    parser.add_option("--rounds", type=int, default=None, help="alternating rounds of the variants (default: 1)")
    parser.add_option("--json", help="write the results here")
    parser.add_option(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=None,
        help="which training variants to time (transformers always; default: all, less the *_bf16 ones on a CPU without hardware bf16)",
    )
    parser.add_option("--seed", type=int, default=123, help="seed of the head, the batch order and the checkpoint's random weights")
    parser.add_option(
        "--baseline_reuses_freed_memory",
        action="store_true",
        help="run the transformers baselines with hf_spam's --reuse_freed_memory too (by default they keep glibc's defaults)",
    )
    parser.add_option(
        "--serving_only",
        action="store_true",
        help="only the serving section: every backend (PyTorch, ONNX Runtime, OpenVINO; fp32, int8, bf16 where native) against "
        "pipeline(batch_size=32)",
    )
    parser.add_option(
        "--serving_model",
        help="serve this trained folder instead of the random gpt2-small (a random head's answers are near ties, int8 flips them)",
    )
    parser.add_option(
        "--backends",
        nargs="+",
        choices=[name for name, spec in SERVING.items() if spec is not None],
        default=None,
        help="which exports the serving section times (eager PyTorch and pipeline(batch_size=32) always; default: all installed, "
        "openvino_bf16 where the CPU computes bf16 natively)",
    )
    parser.add_option("--sweep", action="store_true", help="only the sweep over message length and training-set size (about 3 min)")
    return parser


def benchmark(args: argparse.Namespace) -> dict:
    if args.sweep:
        results = sweep()
        print(format_sweep(results))
        return results
    results = orchestrate(
        args.data_file,
        quick=args.quick,
        rounds=args.rounds,
        variants=args.variants,
        seed=args.seed,
        baseline_reuses_freed_memory=args.baseline_reuses_freed_memory,
        training=not args.serving_only,
        serving_model=args.serving_model,
        backends=args.backends,
        progress=(lambda raw: atomic_write_text(args.json, json.dumps(raw, indent=2))) if args.json else None,
    )
    if "variants" in results:
        print(format_table(results))
    print(format_serving(results["serving"]))
    for name, why in results["failed"].items():
        print(f"Failed: {name}: {why}")
    return results


def main(argv: list[str]) -> None:
    parser_ = parser()
    args = parser_.parse_args(argv)
    if not args.sweep and not args.data_file:
        parser_.error("--data_file is needed (the SMS Spam Collection)")
    log_warnings()
    results = report_errors(lambda: benchmark(args))  # meanwhile --json holds what is measured so far ("partial": true)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2))
