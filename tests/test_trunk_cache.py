"""The frozen-prefix cache on disk: reused when its inputs are unchanged, rebuilt when they change or
when a cache is damaged, sharded across processes, and bounded in memory whatever its size."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_spam import GPTForSequenceClassification
from hf_spam.arguments import ModelArguments
from hf_spam.cached_trunk import CachedPrefix, open_prefix_cache
from hf_spam.data import load_sms_spam, tokenize
from hf_spam.model_setup import configure_trainable
from hf_spam.modeling_gpt import GPTModel
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sms_tokens(sms_file):
    return tokenize(load_sms_spam(sms_file), "dynamic", context_length=128).splits


def frozen_model(seed=0):
    torch.manual_seed(seed)
    return configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, context_length=128)), ModelArguments())


def test_reused_when_unchanged_and_rebuilt_when_anything_changes(sms_tokens, tmp_path, monkeypatch, caplog):
    model, split = frozen_model(), sms_tokens["validation"]
    first = open_prefix_cache(model, split, 2, tmp_path)
    calls = []
    original = GPTModel.prefix
    monkeypatch.setattr(GPTModel, "prefix", lambda self, *a: calls.append(1) or original(self, *a))
    with caplog.at_level(logging.INFO):
        again = open_prefix_cache(model, split, 2, tmp_path)
    assert calls == [] and "Reusing the frozen-prefix cache" in caplog.text, "an unchanged input must not recompute the prefix"
    assert again.folder == first.folder and torch.equal(again.hidden_states(5), first.hidden_states(5))

    with torch.no_grad():
        model.model.trf_blocks[0].att.W_query.weight[0, 0] += 1e-3  # a frozen weight changed
    changed_weights = open_prefix_cache(model, split, 2, tmp_path)
    assert changed_weights.folder != first.folder and calls
    other_tokens = sms_tokens["validation"].select(range(1, len(split)))  # tokenization changed: one example fewer
    assert open_prefix_cache(model, other_tokens, 2, tmp_path).folder not in (first.folder, changed_weights.folder)
    assert open_prefix_cache(model, split, 1, tmp_path).folder not in (first.folder, changed_weights.folder)  # depth
    assert len(list(tmp_path.iterdir())) == 4 and not list(tmp_path.glob("*.partial"))


def test_a_damaged_cache_is_rebuilt_never_read(sms_tokens, tmp_path, caplog):
    model, split = frozen_model(), sms_tokens["validation"]
    cache = open_prefix_cache(model, split, 2, tmp_path)
    expected = cache.hidden_states(len(split) - 1).clone()
    shard = next(cache.folder.glob("*.bin"))
    with open(shard, "r+b") as handle:  # as if the writing process had been killed mid-file
        handle.truncate(shard.stat().st_size // 2)
    with caplog.at_level(logging.WARNING):
        rebuilt = open_prefix_cache(model, split, 2, tmp_path)
    assert "Rebuilding the frozen-prefix cache" in caplog.text and "wrong size" in caplog.text
    assert torch.equal(rebuilt.hidden_states(len(split) - 1), expected)
    (rebuilt.folder / "meta.json").unlink()  # killed before meta.json was written
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        open_prefix_cache(model, split, 2, tmp_path)
    assert "meta.json is missing" in caplog.text


def test_cached_rows_are_the_prefix_of_each_example(sms_tokens, tmp_path):
    model, split = frozen_model(), sms_tokens["validation"].select(range(20))
    cache = open_prefix_cache(model, split, 2, tmp_path, batch_size=7)
    half = open_prefix_cache(model, split, 2, tmp_path / "bf16", dtype=torch.bfloat16)
    assert sum(f.stat().st_size for f in half.folder.glob("*.bin")) * 2 == sum(f.stat().st_size for f in cache.folder.glob("*.bin"))
    with torch.no_grad():
        for i in (0, 7, 19):
            ids = torch.tensor([split[i]["input_ids"]])
            expected = model.model.prefix(ids, None, 2)[0]
            torch.testing.assert_close(cache.hidden_states(i), expected, atol=1e-5, rtol=1e-5)
            assert half.hidden_states(i).dtype == torch.bfloat16
            torch.testing.assert_close(half.hidden_states(i).float(), expected, atol=0.05, rtol=0.02)
    subset = cache.select([3, 1])
    assert subset[0]["input_ids"] == split[3]["input_ids"] and torch.equal(subset[1]["prefix_hidden_states"], cache.hidden_states(1))


def test_duplicate_examples_are_computed_once_and_read_back_as_their_own(sms_tokens, tmp_path, monkeypatch):
    """A repeated message (same ids and mask) is run through the prefix once, stored once, and every
    copy reads rows equal to its own prefix; a message with the same ids but another mask is not a copy."""
    model, split = frozen_model(), sms_tokens["validation"]
    with_copies = split.select([0, 1, 0, 2, 1, 0])
    masks = [[int(i < 5 or position > 0) for position in range(len(ids))] for i, ids in enumerate(with_copies["input_ids"])]
    other_mask = with_copies.add_column("attention_mask", masks)  # the last copy of message 0 with its first token masked
    seen = []
    original = GPTModel.prefix
    monkeypatch.setattr(GPTModel, "prefix", lambda self, ids, *a: seen.append(ids.shape[0]) or original(self, ids, *a))
    cache = open_prefix_cache(model, with_copies, 2, tmp_path)
    assert sum(seen) == 3, "three distinct messages, three prefix rows computed"
    distinct = sum(len(split[i]["input_ids"]) for i in (0, 1, 2))
    assert sum(f.stat().st_size for f in cache.folder.glob("*.bin")) == distinct * model.config.emb_dim * 4
    with torch.no_grad():
        for i in range(len(with_copies)):
            expected = model.model.prefix(torch.tensor([with_copies[i]["input_ids"]]), None, 2)[0]
            torch.testing.assert_close(cache.hidden_states(i), expected, atol=1e-5, rtol=1e-5)
    seen.clear()
    masked = open_prefix_cache(model, other_mask, 2, tmp_path)
    assert sum(seen) == 4 and masked.folder != cache.folder
    with torch.no_grad():
        ids, mask = torch.tensor([other_mask[5]["input_ids"]]), torch.tensor([other_mask[5]["attention_mask"]])
        torch.testing.assert_close(masked.hidden_states(5), model.model.prefix(ids, model.trunk_mask(mask), 2)[0], atol=1e-5, rtol=1e-5)
    assert not torch.equal(masked.hidden_states(5), masked.hidden_states(0))


def test_bf16_prefix_is_autocast_bit_for_bit_and_leaves_the_weights_alone(sms_tokens, tmp_path):
    """--bf16 computes the prefix as Trainer's autocast computes the rest: each cached row equals the
    prefix under ``torch.autocast`` exactly (the frozen linears are cast once instead of on every call),
    stored in bf16 and keyed apart from fp32 rows and from fp32 rows stored in bf16; the model keeps its fp32 weights."""
    model, split = frozen_model(), sms_tokens["validation"].select(range(12))
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    cache = open_prefix_cache(model, split, 2, tmp_path, batch_size=1, autocast=torch.bfloat16)
    assert all(torch.equal(tensor, weights[name]) and tensor.dtype == torch.float32 for name, tensor in model.state_dict().items())
    stored_in_bf16 = open_prefix_cache(model, split, 2, tmp_path, dtype=torch.bfloat16)
    assert len({cache.folder, stored_in_bf16.folder, open_prefix_cache(model, split, 2, tmp_path).folder}) == 3
    assert json.loads((cache.folder / "meta.json").read_text())["storage"] == "bfloat16"
    differs_from_fp32_rows = False
    with torch.inference_mode():
        for i in range(12):
            ids = torch.tensor([split[i]["input_ids"]])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                expected = model.model.prefix(ids, None, 2)[0].to(torch.bfloat16)
            assert torch.equal(cache.hidden_states(i), expected)
            differs_from_fp32_rows |= not torch.equal(stored_in_bf16.hidden_states(i), expected)
    assert differs_from_fp32_rows, "autocast made no difference: the test would not see a prefix computed in fp32"


def test_bf16_switch_reaches_the_cache(tmp_path, sms_file):
    """``--bf16 true`` (Trainer's autocast) also builds the prefix cache under autocast, in bf16."""
    from hf_spam.training import run
    from tests.test_training import parse

    common = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2"]
    common += ["--max_steps", "2", "--initial_eval_batches", "0", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    common += ["--eval_strategy", "no", "--output_dir", str(tmp_path / "out")]
    run(*parse(*common, "--bf16", "true", "--trunk_cache_dir", str(tmp_path / "bf16")))
    run(*parse(*common, "--trunk_cache_dir", str(tmp_path / "fp32")))
    metas = {kind: [json.loads(m.read_text()) for m in (tmp_path / kind).glob("*/meta.json")] for kind in ("bf16", "fp32")}
    assert len(metas["bf16"]) == len(metas["fp32"]) == 3  # train, validation, test
    assert {m["storage"] for m in metas["bf16"]} == {"bfloat16"} and {m["storage"] for m in metas["fp32"]} == {"float32"}
    assert not {m["key"] for m in metas["bf16"]} & {m["key"] for m in metas["fp32"]}


@pytest.mark.slow
def test_two_processes_share_the_work_and_read_each_others_shards(tmp_path, sms_file):
    """torchrun with 2 CPU processes: each example's prefix is computed once in all, and the cache
    holds the same rows as a single process's."""
    common = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2"]
    common += ["--max_steps", "3", "--initial_eval_batches", "0", "--save_strategy", "no"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "scripts/train.py", *common]
    result = subprocess.run(
        [*ddp, "--trunk_cache_dir", str(tmp_path / "two"), "--output_dir", str(tmp_path / "out2")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = [
        sys.executable,
        "scripts/train.py",
        *common,
        "--trunk_cache_dir",
        str(tmp_path / "one"),
        "--output_dir",
        str(tmp_path / "out1"),
    ]
    result = subprocess.run(single, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    two, one = (sorted((tmp_path / name).iterdir()) for name in ("two", "one"))
    assert [p.name for p in two] == [p.name for p in one], "same inputs, same cache keys"
    for folder in two:
        meta = json.loads((folder / "meta.json").read_text())
        assert [s["file"] for s in meta["shards"]] == ["shard-0-of-2.bin", "shard-1-of-2.bin"]
        computed = np.concatenate([np.load(folder / s["index"])[:, 0] for s in meta["shards"]])
        assert sorted(computed.tolist()) == list(range(meta["examples"])), "every example computed exactly once"
    for folder_two, folder_one in zip(two, one, strict=True):
        a, b = CachedPrefix(folder_two, None, 1), CachedPrefix(folder_one, None, 1)
        for example in range(0, len(a.index), 97):
            torch.testing.assert_close(a.hidden_states(example), b.hidden_states(example), atol=1e-5, rtol=1e-5)


MEMORY_PROBE = """
import json, resource, sys
import numpy as np
from hf_spam.arguments import DataArguments, ModelArguments, SpamTrainingArguments
from transformers import HfArgumentParser
from hf_spam.training import run
rng = np.random.default_rng(0)
words = [f"w{i}" for i in range(5000)]
folder, size = sys.argv[1], int(sys.argv[2])
for split, n in (("train", size), ("validation", size // 10), ("test", size // 10)):
    with open(f"{folder}/{split}.csv", "w") as f:
        f.write("text,label\\n")
        for i in range(n):
            f.write(" ".join(rng.choice(words, 120)) + f",{i % 2}\\n")
args = HfArgumentParser((ModelArguments, DataArguments, SpamTrainingArguments)).parse_args_into_dataclasses(args=sys.argv[3:])
results = run(*args)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "test_accuracy": results["test_accuracy"]}))
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_cache(tmp_path):
    """The same run on 400 and on 1,600 texts (~300 tokens each): the cache grows by ~4x (hundreds of
    MB), the process's peak memory by far less than the cache does (it holds one batch, not the cache)."""
    measured = {}
    for size in (400, 1600):
        data, cache = tmp_path / f"data{size}", tmp_path / f"cache{size}"
        data.mkdir()
        argv = ["--dataset_name", str(data), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=256,n_heads=4"]
        argv += ["--trainable_layers", "last_layer", "--num_train_epochs", "1", "--initial_eval_batches", "0", "--save_strategy", "no"]
        argv += ["--trunk_cache_dir", str(cache), "--output_dir", str(tmp_path / f"out{size}")]
        command = [sys.executable, "-c", MEMORY_PROBE, str(data), str(size), *argv]
        result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert 0.0 <= report["test_accuracy"] <= 1.0
        measured[size] = (report["peak_kib"] * 1024, sum(f.stat().st_size for f in cache.rglob("*.bin")))
    (small_peak, small_cache), (large_peak, large_cache) = measured[400], measured[1600]
    assert large_cache - small_cache > 300e6, measured
    assert large_peak - small_peak < (large_cache - small_cache) / 4, f"peak memory grew with the cache: {measured}"


@pytest.mark.slow
def test_training_on_the_disk_cache_ends_where_training_on_token_ids_ends(tmp_path, sms_file):
    """A whole cached run and a whole uncached run of the same recipe: the same final weights up to float rounding."""
    from safetensors.torch import load_file

    from hf_spam.training import run
    from tests.test_training import parse

    common = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2"]
    common += [
        "--num_train_epochs",
        "1",
        "--initial_eval_batches",
        "0",
        "--save_strategy",
        "no",
        "--trunk_cache_dir",
        str(tmp_path / "cache"),
    ]
    cached = run(*parse(*common, "--output_dir", str(tmp_path / "cached")))
    uncached = run(*parse(*common, "--cache_frozen_trunk", "false", "--output_dir", str(tmp_path / "uncached")))
    assert any((tmp_path / "cache").iterdir()), "the first run trained on the cache"
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("cached", "uncached"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-3)
    assert cached["test_accuracy"] == pytest.approx(uncached["test_accuracy"], abs=1 / 300 + 1e-9)
