"""Checkpoints are complete models, whether Trainer trained on the cached prefix or on token ids."""

import json
import logging
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, pipeline

from hf_spam.checkpoints import MANIFEST, file_digest, resolve_checkpoint
from hf_spam.data import load_sms_spam, tokenize
from hf_spam.errors import CheckpointError
from hf_spam.training import run
from tests.helpers import parse

# last block + head train (the cached path) on a 2-block model from random weights
CACHED = ["--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2", "--initial_eval_batches", "0"]


@pytest.mark.slow
def test_every_checkpoint_is_a_model_that_loads_without_hf_spam(tmp_path, sms_file):
    out = tmp_path / "run"
    argv = [*CACHED, "--data_file", str(sms_file), "--num_train_epochs", "2", "--save_total_limit", "5", "--keep_checkpoints", "true"]
    run(*parse(*argv, "--load_best_model_at_end", "false", "--output_dir", str(out)))
    folders = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [f.name for f in folders] == ["checkpoint-130", "checkpoint-260"]
    texts = ["Free entry in 2 a wkly comp to win FA Cup final tkts", "Ok lar... Joking wif u oni..."]
    script = f"""
import json, sys
sys.modules["hf_spam"] = None  # loading must not need hf_spam
from transformers import AutoModelForSequenceClassification, pipeline
out = {{}}
for folder in {[str(f) for f in folders]!r}:
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    classify = pipeline("text-classification", model=folder, trust_remote_code=True, top_k=None)
    out[folder] = [type(model).__name__, [[r["score"] for r in sorted(x, key=lambda r: r["label"])] for x in classify({texts!r})]]
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(name == "GPTForSequenceClassification" for name, _ in loaded.values())
    # the last checkpoint holds the final model: same weights, same predictions
    last, final = load_file(folders[-1] / "model.safetensors"), load_file(out / "model.safetensors")
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in last)
    final_model = pipeline("text-classification", model=str(out), trust_remote_code=True, top_k=None)
    expected = [[r["score"] for r in sorted(x, key=lambda r: r["label"])] for x in final_model(texts)]
    torch.testing.assert_close(torch.tensor(loaded[str(folders[-1])][1]), torch.tensor(expected), atol=1e-6, rtol=0)
    assert not torch.allclose(torch.tensor(loaded[str(folders[0])][1]), torch.tensor(expected)), "epoch 1 and 2 models should differ"


@pytest.mark.slow
def test_resume_crosses_cached_and_uncached_training(tmp_path, sms_file):
    """Epoch 1 on the cached prefix, epoch 2 from its checkpoint on token ids == both epochs cached."""
    common = [*CACHED, "--data_file", str(sms_file), "--num_train_epochs", "2", "--load_best_model_at_end", "false"]
    whole = run(*parse(*common, "--output_dir", str(tmp_path / "whole")))
    first = tmp_path / "split"
    run(*parse(*common, "--max_steps", "130", "--keep_checkpoints", "true", "--output_dir", str(first)))
    resumed = run(
        *parse(
            *common,
            "--cache_frozen_trunk",
            "false",
            "--resume_from_checkpoint",
            str(first / "checkpoint-130"),
            "--output_dir",
            str(tmp_path / "resumed"),
        )
    )
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "resumed"))
    start = load_file(first / "checkpoint-130" / "model.safetensors")
    # epoch 2 moved the weights by `moved`; cached and uncached epoch 2 differ only by float rounding
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    differ = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 1e-3 and differ < 0.01 * moved, (moved, differ)
    assert resumed["test_accuracy"] == pytest.approx(whole["test_accuracy"], abs=1 / 300 + 1e-9)


# ---------------------------------------------------------------------------------------------
# What a resume loads is verified first, and what it computes comes from the checkpoint's weights

STEPS = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no", "--load_best_model_at_end", "false"]
STEPS += ["--keep_checkpoints", "true", "--save_total_limit", "3"]


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, sms_file):
    out = tmp_path_factory.mktemp("checkpointed")
    run(*parse(*CACHED, "--data_file", str(sms_file), *STEPS, "--output_dir", str(out)))
    return out


def fresh_copy(checkpointed, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(checkpointed, copy)
    return copy


@pytest.mark.slow
def test_every_checkpoint_carries_a_manifest_of_its_files(checkpointed):
    for folder in (checkpointed / "checkpoint-2", checkpointed / "checkpoint-4"):
        manifest = json.loads((folder / MANIFEST).read_text())
        on_disk = {p.name for p in folder.iterdir() if p.name != MANIFEST}
        assert set(manifest["files"]) == on_disk and {"optimizer.pt", "model.safetensors", "trainer_state.json"} <= on_disk
        assert manifest["files"]["optimizer.pt"]["xxh3_128"] == file_digest(folder / "optimizer.pt")
        assert manifest["trainable_parameters"] and all(n.startswith(("model.trf_blocks.1", "model.final_norm", "out_head")) for n in manifest["trainable_parameters"])


@pytest.mark.slow
def test_last_skips_a_checkpoint_whose_files_were_damaged(checkpointed, tmp_path, caplog):
    """A truncated optimizer.pt, or random bytes inside it at the same size: `last` skips that checkpoint with
    the reason, a named one is refused, and without a manifest a file that does not load is still found."""
    out = fresh_copy(checkpointed, tmp_path)
    optimizer = out / "checkpoint-4" / "optimizer.pt"
    original = optimizer.read_bytes()
    damages = {
        "optimizer.pt has 1000 bytes": original[:1000],
        "optimizer.pt does not match its checksum": original[: len(original) // 2] + bytes(64) + original[len(original) // 2 + 64 :],
    }
    for reason, damaged in damages.items():
        optimizer.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert resolve_checkpoint("last", out) == str(out / "checkpoint-2")
        assert f"Skipping {out / 'checkpoint-4'}: {reason}" in caplog.text
        with pytest.raises(CheckpointError, match=f"Cannot resume from {out / 'checkpoint-4'}: {reason}"):
            resolve_checkpoint(str(out / "checkpoint-4"), out)
    optimizer.write_bytes(original[:1000])
    (out / "checkpoint-4" / MANIFEST).unlink()  # saved by another tool, or killed just before the manifest
    with pytest.raises(CheckpointError, match=r"optimizer.pt is unreadable"):
        resolve_checkpoint(str(out / "checkpoint-4"), out)


@pytest.mark.slow
def test_a_checkpoint_of_other_trainable_layers_is_a_clear_error(checkpointed, tmp_path, sms_file):
    out = fresh_copy(checkpointed, tmp_path)
    argv = [*CACHED, "--data_file", str(sms_file), *STEPS, "--trainable_layers", "all", "--resume_from_checkpoint", "last"]
    with pytest.raises(CheckpointError, match=r"checkpoint-4: it trained 20 parameter tensors, this run trains 38 .*Resume with the --trainable_layers"):
        run(*parse(*argv, "--output_dir", str(out)))
    (out / "checkpoint-4" / MANIFEST).unlink()  # without a manifest the optimizer state tells
    with pytest.raises(CheckpointError, match=r"its optimizer holds 20 parameter tensors, this run trains 38"):
        run(*parse(*argv, "--output_dir", str(out)))


@pytest.mark.slow
def test_resuming_with_the_cache_trains_on_the_checkpoints_weights(checkpointed, tmp_path, sms_file):
    """Resume another seed's checkpoint (random weights: the fresh model's frozen blocks differ from the
    checkpoint's): the cache must be computed from the checkpoint's weights, so the metrics in all_results.json
    are those of the saved model, recomputed here from the saved folder."""
    out = fresh_copy(checkpointed, tmp_path)
    argv = [*CACHED, "--data_file", str(sms_file), *STEPS, "--max_steps", "40", "--seed", "7", "--keep_checkpoints", "false"]
    results = run(*parse(*argv, "--resume_from_checkpoint", "last", "--trunk_cache_dir", str(tmp_path / "cache"), "--output_dir", str(out)))
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    splits = tokenize(load_sms_spam(sms_file), "longest_train", context_length=model.config.context_length).splits
    for split, key in (("test", "test_accuracy"), ("validation", "eval_accuracy"), ("train", "train_accuracy")):
        with torch.no_grad():
            ids, mask = torch.tensor(splits[split]["input_ids"]), torch.tensor(splits[split]["attention_mask"])
            predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        accuracy = (predicted == torch.tensor(splits[split]["label"])).double().mean().item()
        assert accuracy == pytest.approx(results[key], abs=1e-9), split
    assert json.loads((out / "all_results.json").read_text())["test_accuracy"] == results["test_accuracy"]
