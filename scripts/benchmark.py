"""python scripts/benchmark.py --data_file path/to/SMSSpamCollection --quick --json bench.json

Side-by-side timing of the book recipe: hf_spam's default path, hf_spam in book-exact mode, and transformers'
``GPT2ForSequenceClassification`` + ``Trainer`` with per-batch padding (the reference of the ratios) and padded
to 120 as the book; ``*_bf16`` variants under ``--bf16``; plus inference on the test messages against
``pipeline``. What each variant runs, the work unit and how ``--quick`` scales to it: ``hf_spam.benchmark``.
"""

import argparse
import json
from pathlib import Path

from hf_spam.benchmark import orchestrate
from hf_spam.benchmark.report import format_table
from hf_spam.benchmark.runs import VARIANTS
from hf_spam.benchmark.sweep import format_sweep, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_file", help="SMSSpamCollection (or the UCI zip); needed except for --sweep")
    parser.add_argument("--quick", action="store_true", help="time a fixed slice and extrapolate (about 10 min on 2 CPU cores)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds of the variants (default: 2 quick, 1 full)")
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
    args = parser.parse_args()
    if args.sweep:
        results = sweep()
        print(format_sweep(results))
    else:
        if not args.data_file:
            parser.error("--data_file is needed (the SMS Spam Collection)")
        results = orchestrate(
            args.data_file,
            quick=args.quick,
            rounds=args.rounds,
            variants=args.variants,
            seed=args.seed,
            baseline_reuses_freed_memory=args.baseline_reuses_freed_memory,
        )
        print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
