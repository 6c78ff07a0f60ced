"""The prefix cache at IMDB-like scale: wall time, cache size on disk, peak memory, and the
second run that reuses the cache.

    python scripts/benchmark_scale.py --sizes 1000 4000 --json scale.json
    python scripts/benchmark_scale.py --sizes 1000 --verification     # + the reuse with the checksums off

Data: synthetic reviews whose token lengths follow IMDB's shape. IMDB's 50k reviews are commonly
reported at a mean of ~231 words and a median of ~174; GPT-2's BPE gives ~1.3 tokens per English
word, so a median of ~230 tokens and a mean of ~300. A lognormal with median 230 and sigma 0.75 has
that mean/median ratio (exp(0.75^2/2) = 1.32) and IMDB's long tail; lengths are cut at the context
(1024). Texts are random single-token English words, labels random (accuracy is not the point here).

Model: GPT-2-small width (768, 12 heads), so each cached token costs what it costs for GPT-2 small
(3 KiB in fp32), with ``--layers`` blocks (default 1) so the runs fit in minutes on 2 CPU cores; the
classifier's head trains (``last_layer``), so every block is frozen and cached. Each training split
of N reviews comes with validation and test splits of N/10 each. Every run is its own process;
peak RSS is that process's own ``VmHWM``, which it writes as it exits (``wait4``'s ``ru_maxrss`` would
start from this script's peak, inherited at fork), and the second run of each size reuses the first's cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def single_token_words() -> list[str]:
    """Lower-case English-looking words that GPT-2's BPE encodes as one token with their leading space."""
    from hf_spam import tiktoken_gpt2

    encoding = tiktoken_gpt2()
    words = []
    for token in range(encoding.n_vocab - 1):
        piece = encoding.decode_single_token_bytes(token)
        if re.fullmatch(rb" [a-z]{3,10}", piece):
            words.append(piece.decode())
    return words


def imdb_like_lengths(count: int, rng: np.random.Generator, context: int = 1024) -> np.ndarray:
    return np.clip(np.round(rng.lognormal(mean=np.log(230), sigma=0.75, size=count)), 8, context).astype(int)


def write_data(folder: Path, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    words = np.array(single_token_words())
    folder.mkdir(parents=True, exist_ok=True)
    tokens = 0
    for split, count in (("train", size), ("validation", size // 10), ("test", size // 10)):
        lengths = imdb_like_lengths(count, rng)
        tokens += int(lengths.sum())
        with open(folder / f"{split}.csv", "w", encoding="utf-8") as out:
            out.write("text,label\n")
            for length in lengths:
                out.write("".join(rng.choice(words, length)).strip() + f",{rng.integers(2)}\n")
    return {"examples": size + 2 * (size // 10), "tokens": tokens}


# runs a script (argv[1:]) and, as it exits, writes its VmHWM (kB) to the file named by HF_SPAM_BENCH_PEAK
REPORT_PEAK = """
import atexit, os, runpy, sys
def report():
    with open("/proc/self/status") as status, open(os.environ["HF_SPAM_BENCH_PEAK"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def timed_run(command: list[str], env: dict) -> dict:
    """Wall seconds and peak RSS (MiB, the process's own ``VmHWM``) of ``python script args`` in its own process."""
    with tempfile.NamedTemporaryFile(suffix=".peak") as peak:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", REPORT_PEAK, *command[1:]],
            cwd=ROOT,
            env={**env, "HF_SPAM_BENCH_PEAK": peak.name},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wall = time.perf_counter() - started
        if result.returncode:
            raise RuntimeError(f"{command[:3]} failed:\n{result.stderr[-3000:]}")
        return {"wall_s": wall, "peak_rss_mib": int(Path(peak.name).read_text()) / 1024}


def checksum_seconds(cache: Path) -> float:
    """Seconds to take the xxh3 of every cached row once (what a build adds, and a verified reuse reads)."""
    import xxhash

    started = time.perf_counter()
    for path in cache.rglob("*.bin"):
        with open(path, "rb") as handle:
            digest = xxhash.xxh3_64()
            while chunk := handle.read(64 << 20):
                digest.update(chunk)
    return time.perf_counter() - started


def measure(size: int, layers: int, work: Path, env: dict, verification: bool = False) -> dict:
    data = work / f"data-{size}"
    shape = write_data(data, size)
    cache = work / f"cache-{size}"
    command = [sys.executable, "scripts/train.py", "--dataset_name", str(data), "--weights", "random"]
    command += ["--config_overrides", f"n_layers={layers},emb_dim=768,n_heads=12", "--trainable_layers", "last_layer"]
    command += [
        "--num_train_epochs",
        "1",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--initial_eval_batches",
        "0",
        "--logging_strategy",
        "no",
    ]
    command += ["--per_device_eval_batch_size", "16", "--disable_tqdm", "true", "--prefix_cache_dir", str(cache)]
    first = timed_run([*command, "--output_dir", str(work / f"out-{size}-1")], env)
    cache_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    second = timed_run([*command, "--output_dir", str(work / f"out-{size}-2")], env)
    row = {
        "train_examples": size,
        **shape,
        "cache_gib": cache_bytes / 2**30,
        "first": first,
        "second": second,
        "reuse_speedup": first["wall_s"] / second["wall_s"],
    }
    if verification:  # the reuse again without the checks, then with them, and the raw hashing cost
        row["second_unverified"] = timed_run([*command, "--verify_prefix_cache", "false", "--output_dir", str(work / f"out-{size}-3")], env)
        row["second_verified"] = timed_run([*command, "--output_dir", str(work / f"out-{size}-4")], env)
        row["checksum_s"] = checksum_seconds(cache)
    return row


def format_table(rows: list[dict], budget_gib: float) -> str:
    lines = [
        f"| training reviews | all examples | tokens | cache on disk | × RAM budget ({budget_gib:g} GiB) | first run s | peak "
        "RSS MiB | second run s (cache reused) | peak RSS MiB | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['train_examples']:,} | {r['examples']:,} | {r['tokens']:,} | {r['cache_gib']:.2f} GiB | "
            f"{r['cache_gib'] / budget_gib:.1f} "
            f"| {r['first']['wall_s']:.0f} | {r['first']['peak_rss_mib']:.0f} | {r['second']['wall_s']:.0f} | "
            f"{r['second']['peak_rss_mib']:.0f} "
            f"| {r['reuse_speedup']:.1f}× |"
        )
    return "\n".join(lines)


def format_verification(rows: list[dict]) -> str:
    lines = [
        "| training reviews | cache on disk | xxh3 of every row s | reuse, verified s | reuse, unverified s | verified / unverified |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        verified = (r["second"]["wall_s"] + r["second_verified"]["wall_s"]) / 2
        unverified = r["second_unverified"]["wall_s"]
        lines.append(
            f"| {r['train_examples']:,} | {r['cache_gib']:.2f} GiB | {r['checksum_s']:.2f} | {verified:.1f} | {unverified:.1f} | "
            f"{verified / unverified:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000], help="training reviews per size")
    parser.add_argument("--layers", type=int, default=1, help="transformer blocks (all frozen and cached)")
    parser.add_argument("--ram_budget_gib", type=float, default=1.0, help="the RAM budget the cache is compared with")
    parser.add_argument("--work_dir", help="where data, caches and outputs go (default: a temporary folder)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--verification", action="store_true", help="also time the reuse with the cache's checksums off (--verify_prefix_cache false)"
    )
    args = parser.parse_args()
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.work_dir or temporary)
        rows = [measure(size, args.layers, work, env, args.verification) for size in args.sizes]
    print(format_table(rows, args.ram_budget_gib))
    if args.verification:
        print(format_verification(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"layers": args.layers, "ram_budget_gib": args.ram_budget_gib, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
