"""python scripts/benchmark_model.py [--generate] [--checkpointing] [--json model_bench.json]

The model as a transformers model: greedy ``generate()`` with and without the KV cache against GPT-2's, and
the peak memory of a training step with and without gradient checkpointing. What each measures, and how:
``hf_spam.benchmark.model``.
"""

import argparse
import json

import torch

from hf_spam.benchmark.model import measure_checkpointing, measure_generation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generate", action="store_true", help="KV cache against none and GPT-2's cache")
    parser.add_argument("--checkpointing", action="store_true", help="peak memory with and without gradient checkpointing")
    parser.add_argument("--presets", nargs="+", default=["gpt2-medium", "gpt2-large"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=384, help="tokens per sequence of the training step (batch 8)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    figures: dict = {"threads": torch.get_num_threads()}
    if args.generate:
        figures["generate"] = generation = measure_generation(repeats=args.repeats)
        print(
            f"generate {generation['new_tokens']} tokens: cache {generation['hf_spam_cache_s']:.2f} s, "
            f"no cache {generation['hf_spam_no_cache_s']:.2f} s ({generation['cache_speedup']:.1f}x), "
            f"GPT2LMHeadModel {generation['gpt2_cache_s']:.2f} s"
        )
    if args.checkpointing:
        figures["checkpointing"] = rows = measure_checkpointing(args.presets, args.tokens)
        for row in rows:
            print(
                f"{row['preset']} checkpointing={row['checkpointing']}: peak {row['peak_mib']:.0f} MiB (weights "
                f"{row['weights_peak_mib']:.0f}), step {row['step_s']:.1f} s"
            )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
