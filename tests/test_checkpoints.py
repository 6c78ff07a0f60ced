"""Checkpoints are complete models, whether Trainer trained on the cached prefix or on token ids."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from hf_spam.training import run
from tests.test_training import parse

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
