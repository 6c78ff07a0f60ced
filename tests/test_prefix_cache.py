"""The prefix cache (``hf_spam.cache.build``): training on it is the same computation as training
the whole model; on disk it is reused when its inputs are unchanged, rebuilt when they change or when it
is damaged, sharded across processes, and bounded in memory whatever its size."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_spam import GPTForSequenceClassification
from hf_spam.cache import build as cache_build
from hf_spam.cache.build import PrefixCacheOptions, frozen_depth, open_prefix_cache
from hf_spam.cache.rows import CachedPrefix, collate_cached
from hf_spam.data import load_sms_spam, tokenize
from hf_spam.errors import CacheError
from hf_spam.models.gpt.pooled_position import blocks_mask, prefix
from hf_spam.training.model_setup import configure_trainable
from tests.helpers import ROOT, parse, tiny_config


@pytest.fixture(scope="module")
def sms_splits(sms_file):
    return load_sms_spam(sms_file)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("pooling", "padding"), [("last_non_pad", "dynamic"), ("last", "longest_train"), ("mean", "dynamic")])
def test_cached_top_gives_the_same_loss_and_gradients(sms_splits, pooling, padding, tmp_path):
    torch.manual_seed(0)
    model = configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, pooling=pooling, context_length=128)), "last_block")
    depth = frozen_depth(model)
    assert depth == 2
    data = tokenize(sms_splits, padding, context_length=128)
    examples = data.splits["train"].select(range(8))
    cached = open_prefix_cache(model, examples, depth, PrefixCacheOptions(tmp_path, batch_size=3))  # other batches than the one trained on
    batch = collate_cached([cached[i] for i in range(8)], pad_token_id=50256)
    model.train()
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    full.loss.backward()
    expected = grads(model)
    model.zero_grad()
    top = model(**batch)  # the classifier's own forward, from the cached prefix
    top.loss.backward()
    got = grads(model)

    torch.testing.assert_close(top.logits, full.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(top.loss, full.loss, atol=1e-6, rtol=1e-6)
    assert expected.keys() == got.keys() and all(n.startswith(("out_head", "model.trf_blocks.2", "model.final_norm")) for n in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-4)


def test_nothing_is_cached_when_it_would_not_be_exact():
    assert frozen_depth(configure_trainable(GPTForSequenceClassification(tiny_config()), "all")) == 0
    assert frozen_depth(configure_trainable(GPTForSequenceClassification(tiny_config(drop_rate=0.1)), "last_block")) == 0
    assert frozen_depth(configure_trainable(GPTForSequenceClassification(tiny_config()), "last_layer")) == 2


@pytest.mark.slow
def test_saved_model_reproduces_the_accuracy_measured_on_the_cache(tmp_path, sms_file, sms_splits):
    argv = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2"]
    from hf_spam.training.recipe import run

    results = run(*parse(*argv, "--num_train_epochs", "1", "--initial_eval_batches", "0", "--output_dir", str(tmp_path)))
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    test = tokenize(sms_splits, "longest_train", context_length=model.config.context_length).splits["test"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(test["input_ids"]), attention_mask=torch.tensor(test["attention_mask"])).logits
    accuracy = (logits.argmax(-1) == torch.tensor(test["label"])).sum().item() / len(test)
    assert accuracy == pytest.approx(results["test_accuracy"], abs=1e-9)
    assert json.loads((tmp_path / "all_results.json").read_text())["test_accuracy"] == results["test_accuracy"]


def test_total_flos_counts_the_top_the_cached_steps_run(sms_splits, tmp_path):
    """Trainer's ``total_flos`` (6 x tokens x parameters) counts, on the cached prefix, the parameters each step
    runs through (last block, final norm, head), not the frozen blocks it never touches; uncached, the whole model."""
    from hf_spam.cache.build import prepare
    from hf_spam.training.config import SpamTrainingArguments
    from hf_spam.training.trainer import SpamTrainer

    torch.manual_seed(0)
    model = configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, context_length=128)), "last_block")
    data = tokenize(sms_splits, "dynamic", context_length=128)
    cached, collator = prepare(model, data.splits, PrefixCacheOptions(tmp_path / "cache", batch_size=8))
    top = sum(p.numel() for m in (model.model.trf_blocks[2], model.model.final_norm, model.out_head) for p in m.parameters())
    outside_embeddings = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("model.tok_emb", "model.pos_emb")))
    assert top < outside_embeddings
    for name, train, data_collator, parameters in (
        ("cached", cached["train"], collator, top),
        ("uncached", data.splits["train"], data.collator, outside_embeddings),
    ):
        args = SpamTrainingArguments(
            output_dir=str(tmp_path / name),
            max_steps=3,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            report_to=[],
        )
        trainer = SpamTrainer(model=model, args=args, train_dataset=train, data_collator=data_collator)
        trainer.train()
        tokens = sum(batch["input_ids"].numel() for batch, _ in zip(trainer.get_train_dataloader(), range(3), strict=False))
        assert trainer.state.total_flos == 6 * tokens * parameters, name


def test_gradient_norm_is_taken_on_logging_steps_only_and_is_the_true_norm(sms_splits, tmp_path):
    """Trainer would take the gradient norm on every step to log it; SpamTrainer takes it on the steps that log,
    and the logged value is that step's norm (computed here independently, before the optimizer update)."""
    from transformers import TrainerCallback

    from hf_spam.cache.build import prepare
    from hf_spam.training.config import SpamTrainingArguments
    from hf_spam.training.trainer import SpamTrainer

    norms = {}

    class StepNorms(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
            norms[state.global_step + 1] = torch.linalg.vector_norm(torch.cat(grads)).item()

    torch.manual_seed(0)
    model = configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, context_length=128)), "last_block")
    cached, collator = prepare(
        model, tokenize(sms_splits, "dynamic", context_length=128).splits, PrefixCacheOptions(tmp_path / "cache", batch_size=8)
    )
    args = SpamTrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=5,
        logging_steps=2,
        logging_first_step=True,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to=[],
    )
    trainer = SpamTrainer(model=model, args=args, train_dataset=cached["train"], data_collator=collator, callbacks=[StepNorms()])
    taken = []
    clip = trainer.accelerator.clip_grad_norm_
    trainer.accelerator.clip_grad_norm_ = lambda *a, **k: taken.append(1) or clip(*a, **k)
    trainer.train()
    logged = {entry["step"]: entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry}
    assert sorted(logged) == [1, 2, 4] and len(taken) == 3, (logged, len(taken))
    for step, value in logged.items():
        assert value == pytest.approx(norms[step], rel=1e-5)


@pytest.fixture(scope="module")
def sms_tokens(sms_file):
    return tokenize(load_sms_spam(sms_file), "dynamic", context_length=128).splits


def frozen_model(seed=0):
    torch.manual_seed(seed)
    return configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, context_length=128)), "last_block")


def test_reused_when_unchanged_and_rebuilt_when_anything_changes(sms_tokens, tmp_path, monkeypatch, caplog):
    model, split = frozen_model(), sms_tokens["validation"]
    first = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
    calls = []
    original = cache_build.prefix
    monkeypatch.setattr(cache_build, "prefix", lambda self, *a: calls.append(1) or original(self, *a))
    with caplog.at_level(logging.INFO):
        again = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
    assert calls == [] and "Reusing the prefix cache" in caplog.text, "an unchanged input must not recompute the prefix"
    assert again.folder == first.folder and torch.equal(again.hidden_states(5), first.hidden_states(5))

    with torch.no_grad():
        model.model.trf_blocks[0].att.W_query.weight[0, 0] += 1e-3  # a frozen weight changed
    changed_weights = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
    assert changed_weights.folder != first.folder and calls
    other_tokens = sms_tokens["validation"].select(range(1, len(split)))  # tokenization changed: one example fewer
    assert open_prefix_cache(model, other_tokens, 2, PrefixCacheOptions(tmp_path)).folder not in (first.folder, changed_weights.folder)
    assert open_prefix_cache(model, split, 1, PrefixCacheOptions(tmp_path)).folder not in (first.folder, changed_weights.folder)  # depth
    assert len(list(tmp_path.glob("[!.]*"))) == 4 and not list(tmp_path.glob("*.partial"))  # .locks/ aside


def test_a_damaged_cache_is_rebuilt_never_read(sms_tokens, tmp_path, caplog):
    model, split = frozen_model(), sms_tokens["validation"]
    cache = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
    expected = cache.hidden_states(len(split) - 1).clone()
    shard = next(cache.folder.glob("*.bin"))
    with open(shard, "r+b") as handle:  # as if the writing process had been killed mid-file
        handle.truncate(shard.stat().st_size // 2)
    with caplog.at_level(logging.WARNING):
        rebuilt = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
    assert "Rebuilding the prefix cache" in caplog.text and "wrong size" in caplog.text
    assert torch.equal(rebuilt.hidden_states(len(split) - 1), expected)
    (rebuilt.folder / "meta.json").unlink()  # killed before meta.json was written
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
    assert "meta.json is missing" in caplog.text


def test_cached_rows_are_the_prefix_of_each_example(sms_tokens, tmp_path):
    model, split = frozen_model(), sms_tokens["validation"].select(range(20))
    cache = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path, batch_size=7))
    half = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path / "bf16", dtype=torch.bfloat16))
    assert sum(f.stat().st_size for f in half.folder.glob("*.bin")) * 2 == sum(f.stat().st_size for f in cache.folder.glob("*.bin"))
    with torch.no_grad():
        for i in (0, 7, 19):
            ids = torch.tensor([split[i]["input_ids"]])
            expected = prefix(model.model, ids, None, 2)[0]
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
    original = cache_build.prefix
    monkeypatch.setattr(cache_build, "prefix", lambda self, ids, *a: seen.append(ids.shape[0]) or original(self, ids, *a))
    cache = open_prefix_cache(model, with_copies, 2, PrefixCacheOptions(tmp_path))
    assert sum(seen) == 3, "three distinct messages, three prefix rows computed"
    distinct = sum(len(split[i]["input_ids"]) for i in (0, 1, 2))
    assert sum(f.stat().st_size for f in cache.folder.glob("*.bin")) == distinct * model.config.emb_dim * 4
    with torch.no_grad():
        for i in range(len(with_copies)):
            expected = prefix(model.model, torch.tensor([with_copies[i]["input_ids"]]), None, 2)[0]
            torch.testing.assert_close(cache.hidden_states(i), expected, atol=1e-5, rtol=1e-5)
    seen.clear()
    masked = open_prefix_cache(model, other_mask, 2, PrefixCacheOptions(tmp_path))
    assert sum(seen) == 4 and masked.folder != cache.folder
    with torch.no_grad():
        ids, mask = torch.tensor([other_mask[5]["input_ids"]]), torch.tensor([other_mask[5]["attention_mask"]])
        torch.testing.assert_close(
            masked.hidden_states(5), prefix(model.model, ids, blocks_mask(model.config.pooling, mask), 2)[0], atol=1e-5, rtol=1e-5
        )
    assert not torch.equal(masked.hidden_states(5), masked.hidden_states(0))


def test_bf16_prefix_is_autocast_bit_for_bit_and_leaves_the_weights_alone(sms_tokens, tmp_path):
    """--bf16 computes the prefix as Trainer's autocast computes the rest: each cached row equals the
    prefix under ``torch.autocast`` exactly (the frozen linears are cast once instead of on every call),
    stored in bf16 and keyed apart from fp32 rows and from fp32 rows stored in bf16; the model keeps its fp32 weights."""
    model, split = frozen_model(), sms_tokens["validation"].select(range(12))
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    cache = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path, batch_size=1, autocast=torch.bfloat16))
    assert all(torch.equal(tensor, weights[name]) and tensor.dtype == torch.float32 for name, tensor in model.state_dict().items())
    stored_in_bf16 = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path, dtype=torch.bfloat16))
    assert len({cache.folder, stored_in_bf16.folder, open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path)).folder}) == 3
    assert json.loads((cache.folder / "meta.json").read_text())["storage"] == "bfloat16"
    differs_from_fp32_rows = False
    with torch.inference_mode():
        for i in range(12):
            ids = torch.tensor([split[i]["input_ids"]])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                expected = prefix(model.model, ids, None, 2)[0].to(torch.bfloat16)
            assert torch.equal(cache.hidden_states(i), expected)
            differs_from_fp32_rows |= not torch.equal(stored_in_bf16.hidden_states(i), expected)
    assert differs_from_fp32_rows, "autocast made no difference: the test would not see a prefix computed in fp32"


@pytest.mark.slow
def test_bf16_switch_reaches_the_cache(tmp_path, sms_file):
    """``--bf16 true`` (Trainer's autocast) also builds the prefix cache under autocast, in bf16."""
    from hf_spam.training.recipe import run
    from tests.helpers import parse

    common = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2"]
    common += ["--max_steps", "2", "--initial_eval_batches", "0", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    common += ["--eval_strategy", "no"]
    run(*parse(*common, "--bf16", "true", "--prefix_cache_dir", str(tmp_path / "bf16"), "--output_dir", str(tmp_path / "out_bf16")))
    run(*parse(*common, "--prefix_cache_dir", str(tmp_path / "fp32"), "--output_dir", str(tmp_path / "out_fp32")))
    metas = {kind: [json.loads(m.read_text()) for m in (tmp_path / kind).glob("*/meta.json")] for kind in ("bf16", "fp32")}
    assert len(metas["bf16"]) == len(metas["fp32"]) == 3  # train, validation, test
    assert {m["storage"] for m in metas["bf16"]} == {"bfloat16"} and {m["storage"] for m in metas["fp32"]} == {"float32"}
    assert not {m["key"] for m in metas["bf16"]} & {m["key"] for m in metas["fp32"]}


MEMORY_PROBE = """
import json, resource, sys
import numpy as np
from hf_spam.training.arguments import DataArguments, ModelArguments
from hf_spam.training.config import SpamTrainingArguments
from transformers import HfArgumentParser
from hf_spam.training.recipe import run
rng = np.random.default_rng(0)
words = [f"w{i}" for i in range(5000)]
root, sizes = sys.argv[1], [int(size) for size in sys.argv[2].split(",")]
for size in sizes:  # one after the other: the process's peak after each run
    for split, n in (("train", size), ("validation", size // 10), ("test", size // 10)):
        with open(f"{root}/data{size}/{split}.csv", "w") as f:
            f.write("text,label\\n")
            for i in range(n):
                f.write(" ".join(rng.choice(words, 120)) + f",{i % 2}\\n")
    argv = [a.replace("{size}", str(size)) for a in sys.argv[3:]]
    args = HfArgumentParser((ModelArguments, DataArguments, SpamTrainingArguments)).parse_args_into_dataclasses(args=argv)
    results = run(*args)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"size": size, "peak_kib": peak_kib, "test_accuracy": results["test_accuracy"]}))
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_cache(gpt2_bpe, tmp_path):
    """The same run on 200, then on 800 texts (~300 tokens each, 512 wide) in one process: the cache grows by ~4x
    (~500 MB), the process's peak memory by far less than the cache does (it holds one batch, not the cache)."""
    for size in (200, 800):
        (tmp_path / f"data{size}").mkdir()
    argv = ["--dataset_name", str(tmp_path / "data{size}"), "--weights", "random", "--config_overrides", "n_layers=1,emb_dim=512,n_heads=8"]
    argv += ["--trainable_layers", "last_layer", "--num_train_epochs", "1", "--initial_eval_batches", "0", "--save_strategy", "no"]
    argv += ["--load_best_model_at_end", "false", "--prefix_cache_dir", str(tmp_path / "cache{size}")]
    argv += ["--output_dir", str(tmp_path / "out{size}")]
    command = [sys.executable, "-c", MEMORY_PROBE, str(tmp_path), "200,800", *argv]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = {}
    for line in [line for line in result.stdout.splitlines() if line.startswith('{"size"')]:
        report = json.loads(line)
        assert 0.0 <= report["test_accuracy"] <= 1.0
        cache = tmp_path / f"cache{report['size']}"
        measured[report["size"]] = (report["peak_kib"] * 1024, sum(f.stat().st_size for f in cache.rglob("*.bin")))
    (small_peak, small_cache), (large_peak, large_cache) = measured[200], measured[800]
    assert large_cache - small_cache > 300e6, measured
    assert large_peak - small_peak < (large_cache - small_cache) / 4, f"peak memory grew with the cache: {measured}"


@pytest.mark.slow
def test_training_on_the_disk_cache_ends_where_training_on_token_ids_ends(tmp_path, sms_file):
    """A whole cached run and a whole uncached run of the same recipe: the same final weights up to float rounding."""
    from safetensors.torch import load_file

    from hf_spam.training.recipe import run
    from tests.helpers import parse

    common = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2"]
    common += [
        "--num_train_epochs",
        "1",
        "--initial_eval_batches",
        "0",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--prefix_cache_dir",
        str(tmp_path / "cache"),
    ]
    cached = run(*parse(*common, "--output_dir", str(tmp_path / "cached")))
    uncached = run(*parse(*common, "--prefix_cache", "false", "--output_dir", str(tmp_path / "uncached")))
    assert any((tmp_path / "cache").iterdir()), "the first run trained on the cache"
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("cached", "uncached"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-3)
    assert cached["test_accuracy"] == pytest.approx(uncached["test_accuracy"], abs=1 / 300 + 1e-9)


# ---------------------------------------------------------------------------------------------
# Damage, concurrency, failures, the key


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def _changed_digit(content: bytes, after: bytes) -> tuple[int, bytes]:
    """The byte offset of the digit that follows ``after``, and a different digit: still valid JSON, same size."""
    offset = content.index(after) + len(after)
    return offset, b"9" if content[offset : offset + 1] != b"9" else b"8"


def test_same_size_damage_anywhere_is_found_and_rebuilt(sms_tokens, tmp_path, caplog):
    """Random bytes in the middle of a shard, one flipped byte in an index or in meta.json: the sizes still
    match, the checksums do not, and the cache is rebuilt (with a warning naming it) instead of being read."""
    model, split = frozen_model(), sms_tokens["train"]
    cache = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
    expected = {i: cache.hidden_states(i).clone() for i in range(len(split))}
    shard, index, meta = next(cache.folder.glob("*.bin")), next(cache.folder.glob("*.index.npy")), cache.folder / "meta.json"
    size = shard.stat().st_size
    # Each damage is located when it is made: a rebuild rewrites meta.json with a new "created" time whose
    # repr can be a digit shorter or longer, which would move an offset read before the first rebuild.
    damages = {
        "do not match their checksum": lambda: (shard, size // 2, np.random.default_rng(0).bytes(min(1 << 20, size // 4))),
        "index.npy does not match its checksum": lambda: (index, index.stat().st_size - 7, bytes([index.read_bytes()[-7] ^ 0x40])),
        "meta.json does not match its checksum": lambda: (meta, *_changed_digit(meta.read_bytes(), b'"bytes": ')),
    }
    for reason, damage in damages.items():
        path, offset, data = damage()
        overwrite(path, offset, data)
        assert path.stat().st_size in (size, index.stat().st_size, meta.stat().st_size)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            rebuilt = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
        assert f"Rebuilding the prefix cache {cache.folder}" in caplog.text and reason in caplog.text, caplog.text
        assert all(torch.equal(rebuilt.hidden_states(i), expected[i]) for i in range(len(split)))


def test_rows_damaged_after_opening_are_refused_as_they_are_read(sms_tokens, tmp_path):
    model, split = frozen_model(), sms_tokens["validation"]
    cache = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
    first, rows = (int(x) for x in cache.index[3, 1:3])
    overwrite(next(cache.folder.glob("*.bin")), (first + rows // 2) * cache.row_bytes, b"\x00\x00\x80\x7f")  # one float: +inf
    with pytest.raises(CacheError, match=f"{cache.folder}: the cached rows of example 3 no longer match"):
        cache[cache.rows.tolist().index(3)]
    assert torch.isinf(CachedPrefix(cache.folder, split, 2, verify=False).hidden_states(3)).any(), "the damage is real"


def test_the_key_covers_every_field_of_the_config(sms_tokens, tmp_path):
    """n_heads=2 and n_heads=4 have the same shapes, so the same seed gives the same tensors; only the
    config tells the prefixes apart. Fields only the head reads keep the key (relabelling reuses the cache)."""
    split = sms_tokens["validation"].select(range(10))
    caches = {}
    for heads in (2, 4):
        torch.manual_seed(0)
        model = configure_trainable(GPTForSequenceClassification(tiny_config(n_heads=heads, n_layers=3, context_length=128)), "last_block")
        caches[heads] = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
        with torch.no_grad():
            torch.testing.assert_close(
                caches[heads].hidden_states(4), prefix(model.model, torch.tensor([split[4]["input_ids"]]), None, 2)[0]
            )
    assert caches[2].folder != caches[4].folder
    assert not torch.allclose(caches[2].hidden_states(4), caches[4].hidden_states(4))
    relabelled = frozen_model()
    relabelled.config.update({"id2label": {0: "no", 1: "yes"}, "label2id": {"no": 0, "yes": 1}, "loss_ignore_index": 50256})
    assert (
        open_prefix_cache(relabelled, split, 2, PrefixCacheOptions(tmp_path)).folder
        == open_prefix_cache(frozen_model(), split, 2, PrefixCacheOptions(tmp_path)).folder
    )


CONCURRENT_PROBE = """
import sys, time, torch
from hf_spam import GPTForSequenceClassification
from hf_spam.cache.build import PrefixCacheOptions, open_prefix_cache
from hf_spam.data import load_sms_spam, tokenize
from hf_spam.errors import CacheError
from hf_spam.training.model_setup import configure_trainable
from hf_spam.cache import build as cache_build
from tests.helpers import tiny_config
import logging; logging.basicConfig(level=logging.INFO)
sms, cache_dir, go = sys.argv[1:4]
split = tokenize(load_sms_spam(sms), "dynamic", context_length=128).splits["train"]
torch.manual_seed(0)
model = configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, context_length=128)), "last_block")
original = cache_build.prefix
def slow_prefix(*args):  # a long build, so that the two runs overlap for certain
    time.sleep(0.02)
    return original(*args)
cache_build.prefix = slow_prefix
while not __import__("os").path.exists(go):
    time.sleep(0.01)
cache = open_prefix_cache(model, split, 2, PrefixCacheOptions(cache_dir, batch_size=8))
print("rows", sum(float(cache.hidden_states(i).double().sum()) for i in range(len(split))), flush=True)
"""


@pytest.mark.slow
def test_two_runs_at_once_build_once_and_both_read_it(sms_file, tmp_path):
    """A sweep starts two runs on the same cache folder: one builds, the other waits for it and reuses it."""
    go = tmp_path / "go"
    command = [sys.executable, "-c", CONCURRENT_PROBE, str(sms_file), str(tmp_path / "cache"), str(go)]
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    logs = [err for _, err in outputs]
    assert sum(log.count("Building the prefix cache") for log in logs) == 1, logs
    assert sum("built by another run meanwhile" in log for log in logs) == 1 and any("Another run is building" in log for log in logs)
    assert outputs[0][0].split()[-1] == outputs[1][0].split()[-1], "both runs read the same rows"
    assert [p.name for p in (tmp_path / "cache").glob("[!.]*")] == [next((tmp_path / "cache").glob("[!.]*")).name]


def test_a_failed_build_leaves_nothing_and_an_abandoned_one_is_swept(sms_tokens, tmp_path, monkeypatch):
    model, split = frozen_model(), sms_tokens["validation"]
    original = cache_build.prefix
    calls = []

    def failing_prefix(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed mid-build")
        return original(self, *args)

    monkeypatch.setattr(cache_build, "prefix", failing_prefix)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path, batch_size=8))
    assert not list(tmp_path.glob("[!.]*")), "the failed build's partial folder was removed"
    abandoned = tmp_path / ("f" * 40 + ".partial")  # a run killed (SIGKILL) while building another key
    abandoned.mkdir()
    (abandoned / "shard-0-of-1.bin").write_bytes(b"\0" * 4096)
    cache = open_prefix_cache(model, split, 2, PrefixCacheOptions(tmp_path))
    assert not abandoned.exists() and [p.name for p in tmp_path.glob("[!.]*")] == [cache.folder.name]


RLIMIT_RUN = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing past the limit then fails with EFBIG, as a full disk fails with ENOSPC
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["hf-spam", *sys.argv[1:]]
runpy.run_module("hf_spam.cli", run_name="__main__", alter_sys=True)
"""

TRAIN = ["--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2", "--max_steps", "1", "--initial_eval_batches", "0"]
TRAIN += ["--save_strategy", "no", "--eval_strategy", "no", "--load_best_model_at_end", "false"]


def train_script(*argv: str, rlimit: int | None = None) -> subprocess.CompletedProcess:
    prefix = [sys.executable, "-c", RLIMIT_RUN, str(rlimit)] if rlimit else [sys.executable]
    command = [*prefix, "train"] if rlimit else [*prefix, "-m", "hf_spam.cli", "train"]
    return subprocess.run([*command, *TRAIN, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_build_that_cannot_write_says_so_without_a_traceback(sms_file, tmp_path):
    """The disk fills up mid-build (here a file-size limit: writes fail as on a full disk): one error naming
    the folder and --prefix_cache_dir, exit status 2, no traceback, no partial folder left."""
    cache = tmp_path / "cache"
    result = train_script(
        "--data_file", str(sms_file), "--prefix_cache_dir", str(cache), "--output_dir", str(tmp_path / "o"), rlimit=2_000_000
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Writing the prefix cache in" in result.stderr
    assert "File too large" in result.stderr and "--prefix_cache_dir" in result.stderr
    assert not list(cache.glob("[!.]*")), "nothing left behind"


def test_an_unusable_cache_folder_is_one_clear_error(sms_tokens, tmp_path, small_or_read_only):
    model, split = frozen_model(), sms_tokens["train"]
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for folder in (a_file, a_file / "below", small_or_read_only["read_only"] / "cache"):
        with pytest.raises(CacheError, match=rf"cache folder {folder} cannot be written .*--prefix_cache_dir"):
            open_prefix_cache(model, split, 2, PrefixCacheOptions(folder))
    if "small" in small_or_read_only:  # 1 MiB cannot hold the ~7 MiB of rows: said before anything is computed
        calls = []
        original = cache_build.prefix
        cache_build.prefix = lambda *a: calls.append(1) or original(*a)
        try:
            with pytest.raises(CacheError, match=r"needs \d+\.\d MiB in .*small, which has 1\.0 MiB free.*--prefix_cache_dir"):
                open_prefix_cache(model, split, 2, PrefixCacheOptions(small_or_read_only["small"]))
        finally:
            cache_build.prefix = original
        assert calls == [] and not list(small_or_read_only["small"].glob("[!.]*"))


@pytest.mark.slow
def test_two_torchrun_jobs_at_once_share_one_cache(tmp_path, sms_file):
    """Two sweeps' jobs, each torchrun with 2 processes, started together on one cache folder: both finish,
    each split's cache is built once (by one job's two processes) and the other job reuses it (a slowed-down
    prefix makes the first build last long enough for the second job to arrive while it runs)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = []
    for name in ("a", "b"):
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "tests/support/train_probe.py",
            "--probe_slow_prefix",
            "0.3",
        ]
        command += [
            *TRAIN,
            "--data_file",
            str(sms_file),
            "--prefix_cache_dir",
            str(tmp_path / "cache"),
            "--output_dir",
            str(tmp_path / name),
        ]
        jobs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [job.communicate(timeout=900)[0] for job in jobs]
    errors = [[line for line in log.splitlines() if "Error" in line] for log in logs]  # each rank's own, not only the last
    assert [job.returncode for job in jobs] == [0, 0], errors
    assert len(list((tmp_path / "cache").glob("[!.]*"))) == 3 and not list((tmp_path / "cache").glob("*.partial"))
    assert "".join(logs).count("Building the prefix cache") == 3, "each split built once, by one job"
    assert "built by another run meanwhile" in "".join(logs), "the jobs overlapped: one waited for the other's build"


@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_a_cache_build_shows_its_progress_unless_disable_tqdm(sms_file, tmp_path, capfd, disable_tqdm):
    """Building a split's cache can take minutes: a tqdm bar per split, as Trainer shows for its loops; none with
    ``--disable_tqdm true``."""
    from hf_spam.cache import prepare
    from hf_spam.training import SpamTrainingArguments

    data = tokenize(load_sms_spam(sms_file), "dynamic", context_length=128)
    args = SpamTrainingArguments(
        output_dir=str(tmp_path / "out"), prefix_cache_dir=str(tmp_path / "cache"), disable_tqdm=disable_tqdm, report_to=[]
    )
    capfd.readouterr()
    prepare(frozen_model(), data.splits, args.prefix_cache_options())
    bars = re.findall(r"Prefix cache: 100%\|[^|]*\| (\d+)/(\d+)", capfd.readouterr().err)
    if disable_tqdm:
        assert bars == []
    else:
        distinct = {str(len({tuple(ids) for ids in split["input_ids"]})) for split in data.splits.values()}  # computed once each
        assert all(done == total for done, total in bars) and {total for _, total in bars} == distinct, bars


def test_spam_trainer_builds_no_cache_itself(sms_splits, tmp_path):
    """Constructing ``SpamTrainer`` computes nothing: given token ids it trains on them (the cache is a step of its own,
    ``hf_spam.cache.prepare``, that a recipe or a notebook calls before it), and records no cache it did not get."""
    from hf_spam.training import SpamTrainer, SpamTrainingArguments

    data = tokenize(sms_splits, "dynamic", context_length=128)
    args = SpamTrainingArguments(output_dir=str(tmp_path / "out"), prefix_cache_dir=str(tmp_path / "cache"), report_to=[])
    trainer = SpamTrainer(frozen_model(), args, data.collator, data.splits["train"], data.splits["validation"])
    assert trainer.train_dataset is data.splits["train"] and trainer.eval_dataset["validation"] is data.splits["validation"]
    assert not (tmp_path / "cache").exists() and not any(name.startswith("prefix_cache") for name in trainer.run_metrics)
