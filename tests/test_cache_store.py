"""The prefix cache as a managed cache: listed, least recently used first, pruned without touching
what a live process uses, bounded during training, and clear about bad input."""

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

from hf_spam import GPTForSequenceClassification
from hf_spam.cache.build import PrefixCacheOptions, _stored_bytes, open_prefix_cache
from hf_spam.cache.management import list_caches, parse_age, parse_size, prune_caches
from hf_spam.cache.store import usable_root
from hf_spam.data import load_sms_spam, tokenize
from hf_spam.errors import CacheError
from hf_spam.training.model_setup import configure_trainable
from tests.helpers import ROOT, run_script, tiny_config


@pytest.fixture(scope="module")
def splits(sms_file):
    return tokenize(load_sms_spam(sms_file), "dynamic", context_length=128).splits


def frozen(seed: int = 0):
    torch.manual_seed(seed)
    return configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, context_length=128)), "last_block")


def build(root, split, seed=0, name="validation", depth=2):
    return open_prefix_cache(
        frozen(seed), split, depth, PrefixCacheOptions(root, provenance={"model": f"tiny seed {seed}", "data": "SMS", "split": name})
    )


def age(cache, seconds_ago: float) -> None:
    """As if the cache had last been used ``seconds_ago``."""
    stamp = time.time() - seconds_ago
    os.utime(cache.folder / "last_used", (stamp, stamp))


def test_list_shows_every_key_with_its_provenance(splits, tmp_path):
    a = build(tmp_path, splits["validation"], seed=0)
    b = build(tmp_path, splits["test"], seed=1, name="test")
    c = build(tmp_path, splits["validation"], seed=0, depth=1)
    entries = {e.key: e for e in list_caches(tmp_path)}
    assert set(entries) == {a.folder.name, b.folder.name, c.folder.name}
    for cache, (model, split, depth, examples) in (
        (a, ("tiny seed 0", "validation", 2, 149)),
        (b, ("tiny seed 1", "test", 2, 300)),
        (c, ("tiny seed 0", "validation", 1, 149)),
    ):
        entry = entries[cache.folder.name]
        assert (entry.model, entry.split, entry.depth, entry.examples, entry.data, entry.dtype) == (
            model,
            split,
            depth,
            examples,
            "SMS",
            "float32",
        )
        assert entry.status == "complete" and entry.bytes == sum(p.stat().st_size for p in cache.folder.iterdir())
        assert entry.created <= entry.last_used and entry.in_use, "this process holds what it opened"


def test_least_recently_used_first_and_a_reuse_counts_as_a_use(splits, tmp_path):
    a = build(tmp_path, splits["validation"], seed=0)
    b = build(tmp_path, splits["validation"], seed=1)
    age(a, 3600)
    age(b, 1800)
    assert [e.key for e in list_caches(tmp_path)] == [a.folder.name, b.folder.name]
    build(tmp_path, splits["validation"], seed=0)  # reused
    assert [e.key for e in list_caches(tmp_path)] == [b.folder.name, a.folder.name]


HOLDER = """
import sys, torch
from hf_spam import GPTForSequenceClassification
from hf_spam.cache.build import PrefixCacheOptions, _stored_bytes, open_prefix_cache
from hf_spam.data import load_sms_spam, tokenize
from hf_spam.training.model_setup import configure_trainable
from tests.helpers import tiny_config
split = tokenize(load_sms_spam(sys.argv[1]), "dynamic", context_length=128).splits["validation"]
torch.manual_seed(int(sys.argv[3]))
model = configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, context_length=128)), "last_block")
cache = open_prefix_cache(model, split, 2, PrefixCacheOptions(sys.argv[2]))
print(cache.folder.name, flush=True)
sys.stdin.read()  # holds the cache until the test closes stdin
"""


@pytest.mark.slow
def test_prune_skips_a_key_held_by_a_live_process_and_dry_run_changes_nothing(splits, tmp_path, sms_file):
    root = tmp_path / "cache"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(sms_file), str(root), "5"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        held = holder.stdout.readline().strip()
        a = build(root, splits["validation"], seed=0)
        b = build(root, splits["validation"], seed=1)
        a.release(), b.release()  # this process is done with them
        before = sorted(p.name for p in root.iterdir())
        dry = prune_caches(root, keep=0, dry_run=True)
        assert sorted(p.name for p in root.iterdir()) == before, "a dry run removes nothing"
        assert {e.key for e in dry.removed} == {a.folder.name, b.folder.name} and [(e.key, why) for e, why in dry.skipped] == [
            (held, "in use by a running process")
        ]
        result = prune_caches(root, keep=0)
        assert {e.key for e in result.removed} == {a.folder.name, b.folder.name} and result.freed == sum(e.bytes for e in dry.removed)
        assert [e.key for e in list_caches(root)] == [held] and (root / held / "meta.json").is_file()
    finally:
        holder.communicate("", timeout=60)
    assert {e.key for e in prune_caches(root, keep=0).removed} == {held}, "free once its process has ended"


def test_older_than_max_size_keep_damaged_and_abandoned_builds(splits, tmp_path, caplog):
    caches = [build(tmp_path, splits["validation"], seed=s) for s in range(4)]
    for cache, hours in zip(caches, (40, 30, 20, 10), strict=True):
        cache.release()
        age(cache, hours * 3600)
    assert {e.key for e in prune_caches(tmp_path, older_than=parse_age("1d"), dry_run=True).removed} == {
        caches[0].folder.name,
        caches[1].folder.name,
    }
    assert [e.key for e in prune_caches(tmp_path, keep=3, dry_run=True).removed] == [caches[0].folder.name]
    size = caches[0].bytes + sum(p.stat().st_size for p in caches[0].folder.iterdir() if p.suffix not in (".bin", ".npy"))
    by_size = prune_caches(tmp_path, max_size=2 * size + size // 2, dry_run=True).removed
    assert [e.key for e in by_size] == [caches[0].folder.name, caches[1].folder.name], "least recently used first, until the rest fits"

    (caches[3].folder / "meta.json").write_text("{ not json")
    abandoned = tmp_path / ("e" * 40 + ".partial")
    abandoned.mkdir()
    old = time.time() - 7200
    os.utime(abandoned, (old, old))
    listed = {e.folder.name: e.status for e in list_caches(tmp_path)}
    assert listed[caches[3].folder.name].startswith("damaged: meta.json") and listed[abandoned.name] == "abandoned"
    result = prune_caches(tmp_path)
    assert {e.folder.name for e in result.removed} == {caches[3].folder.name, abandoned.name}
    assert sorted(p.name for p in tmp_path.glob("[!.]*")) == sorted(c.folder.name for c in caches[:3])


def test_bad_input_names_the_option(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match=r"is not a prefix cache folder \(it holds notes.txt\). Pass --prefix_cache_dir"):
        list_caches(tmp_path)
    with pytest.raises(CacheError, match=r"--max_size '20XB': give a size such as 20GB"):
        parse_size("20XB")
    with pytest.raises(CacheError, match=r"--older_than '7 days': give an age such as 7d"):
        parse_age("7 days")
    assert parse_size("1.5GiB") == 1610612736 and parse_size("20GB") == 20 * 10**9 and parse_age("12h") == 43200


@pytest.mark.slow
def test_cache_script_names_the_option_without_a_traceback(tmp_path):
    result = run_script("cache.py", "prune", "--max_size", "20XB", "--prefix_cache_dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "--max_size '20XB'" in result.stderr


TRAIN = ["--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2", "--max_steps", "1", "--initial_eval_batches", "0"]
TRAIN += ["--save_strategy", "no", "--eval_strategy", "no", "--load_best_model_at_end", "false"]


@pytest.mark.slow
def test_training_records_its_keys_and_evicts_to_fit_a_size_limit(splits, tmp_path, sms_file, caplog):
    from hf_spam.training.recipe import run
    from tests.helpers import parse

    root = tmp_path / "cache"
    old = [build(root, splits["test"], seed=s, name="test") for s in (1, 2)]
    for cache, hours in zip(old, (2, 1), strict=True):
        cache.release()
        age(cache, hours * 3600)
    argv = [*TRAIN, "--data_file", str(sms_file), "--prefix_cache_dir", str(root)]
    with pytest.raises(CacheError, match=r"need .* together .* more than --prefix_cache_max_size 1.0 kB"):
        run(*parse(*argv, "--prefix_cache_max_size", "1kB", "--output_dir", str(tmp_path / "none")))
    assert sorted(e.key for e in list_caches(root)) == sorted(c.folder.name for c in old), "nothing computed, nothing evicted"
    sizes = {name: _stored_bytes(splits[name], 64, torch.float32) for name in ("train", "validation", "test")}  # the run's three keys
    needed = sum(sizes.values())
    # the training split alone would fit, the three together cannot: refused before the first is computed
    with pytest.raises(CacheError, match=r"need .* together \(train .*, validation .*, test .*\)"):
        run(*parse(*argv, "--prefix_cache_max_size", f"{sizes['train'] + 1}B", "--output_dir", str(tmp_path / "none2")))
    assert sorted(e.key for e in list_caches(root)) == sorted(c.folder.name for c in old), "nothing computed, nothing evicted"

    budget = sum(c.bytes for c in old) + needed - old[0].bytes // 2  # they fit once the least recently used old key has gone
    with caplog.at_level(logging.INFO):
        results = run(*parse(*argv, "--prefix_cache_max_size", f"{budget}B", "--output_dir", str(tmp_path / "first")))
    assert f"Evicted the prefix cache {old[0].folder}" in caplog.text and str(old[1].folder) not in caplog.text
    assert sum(e.bytes for e in list_caches(root)) <= budget
    recorded = json.loads((tmp_path / "first" / "all_results.json").read_text())
    for split in ("train", "validation", "test"):
        key = recorded[f"prefix_cache_{split}_key"]
        assert (
            recorded[f"prefix_cache_{split}_built"] is True
            and recorded[f"prefix_cache_{split}_bytes"] == results[f"prefix_cache_{split}_bytes"] > 0
        )
        assert (root / key / "meta.json").is_file() and f"Prefix cache for {split}: {root / key}, built by this run" in caplog.text
    again = run(*parse(*argv, "--output_dir", str(tmp_path / "second")))
    assert [again[f"prefix_cache_{s}_built"] for s in ("train", "validation", "test")] == [False] * 3


def _probe_root(root: str) -> None:
    for _ in range(300):
        usable_root(Path(root))


def test_runs_starting_together_each_find_the_cache_folder_writable(tmp_path):
    """Two processes checking one cache folder at the same moment (two sweep jobs starting): neither is told it
    cannot be written (a shared probe file, removed by one while the other removes it too, did just that)."""
    with ProcessPoolExecutor(2) as pool:
        for job in [pool.submit(_probe_root, str(tmp_path)) for _ in range(2)]:
            job.result()
    assert not [path for path in tmp_path.rglob("*") if path.is_file()], "no probe file is left behind"
