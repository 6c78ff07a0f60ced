"""Checkpoints are complete models, whether Trainer trained on the cached prefix or on token ids."""

import csv
import json
import logging
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, TrainerCallback, pipeline

from hf_spam.data import load_sms_spam, tokenize
from hf_spam.errors import CheckpointError, TrainingError
from hf_spam.training.checkpoints import MANIFEST, file_digest, resolve_checkpoint
from hf_spam.training.recipe import run
from tests.helpers import parse, run_script

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
from transformers import AutoModelForSequenceClassification, TrainerCallback, pipeline
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
            "--prefix_cache",
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
        assert manifest["trainable_parameters"] and all(
            n.startswith(("model.trf_blocks.1", "model.final_norm", "out_head")) for n in manifest["trainable_parameters"]
        )


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
    with pytest.raises(
        CheckpointError, match=r"checkpoint-4: it trained 20 parameter tensors, this run trains 38 .*Resume with the options"
    ):
        run(*parse(*argv, "--output_dir", str(out)))
    (out / "checkpoint-4" / MANIFEST).unlink()  # without a manifest (named: `last` skips it) the optimizer state tells
    with pytest.raises(CheckpointError, match=r"its optimizer holds 20 parameter tensors, this run trains 38"):
        run(*parse(*argv, "--resume_from_checkpoint", str(out / "checkpoint-4"), "--output_dir", str(out)))


@pytest.mark.slow
def test_resuming_with_the_cache_trains_on_the_checkpoints_weights(checkpointed, tmp_path, sms_file):
    """Resume another seed's checkpoint (random weights: the fresh model's frozen blocks differ from the
    checkpoint's): the cache must be computed from the checkpoint's weights, so the metrics in all_results.json
    are those of the saved model, recomputed here from the saved folder."""
    out = fresh_copy(checkpointed, tmp_path)
    argv = [*CACHED, "--data_file", str(sms_file), *STEPS, "--max_steps", "40", "--seed", "7", "--keep_checkpoints", "false"]
    resume = str(out / "checkpoint-4")  # named: `last` takes only this run's (this seed's) checkpoints
    results = run(
        *parse(*argv, "--resume_from_checkpoint", resume, "--prefix_cache_dir", str(tmp_path / "cache"), "--output_dir", str(out))
    )
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    splits = tokenize(load_sms_spam(sms_file), "longest_train", context_length=model.config.context_length).splits
    for split, key in (("test", "test_accuracy"), ("validation", "eval_accuracy"), ("train", "train_accuracy")):
        with torch.no_grad():
            ids, mask = torch.tensor(splits[split]["input_ids"]), torch.tensor(splits[split]["attention_mask"])
            predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        accuracy = (predicted == torch.tensor(splits[split]["label"])).double().mean().item()
        assert accuracy == pytest.approx(results[key], abs=1e-9), split
    assert json.loads((out / "all_results.json").read_text())["test_accuracy"] == results["test_accuracy"]


# ---------------------------------------------------------------------------------------------
# Output folders are not shared by accident, and a checkpoint knows which run it belongs to


def csv_data(folder, sms_file, classes=("ham", "spam")):
    """The SMS training and validation rows as the user's CSV files, with class names (a third class: every 7th row)."""
    splits = load_sms_spam(sms_file)
    folder.mkdir()
    for name in ("train", "validation"):
        rows = [
            (t, classes[2] if len(classes) > 2 and i % 7 == 0 else classes[label])
            for i, (t, label) in enumerate(zip(splits[name]["text"], splits[name]["label"], strict=True))
        ]
        with open(folder / f"{name}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([("text", "label"), *rows])
    return ["--train_file", str(folder / "train.csv"), "--validation_file", str(folder / "validation.csv")]


def digests(folder):
    return {p.name: file_digest(p) for p in folder.iterdir() if p.is_file()}


@pytest.mark.slow
def test_a_run_refuses_another_runs_output_dir_and_never_deletes_its_checkpoints(checkpointed, tmp_path, sms_file, caplog):
    out = fresh_copy(checkpointed, tmp_path)
    before = {name: digests(out / name) for name in ("checkpoint-2", "checkpoint-4")}
    other = [*CACHED, "--data_file", str(sms_file), *STEPS, "--seed", "7"]
    refused = run_script("train.py", *other, "--output_dir", str(out), timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert f"--output_dir {out} is not empty (README.md" in refused.stderr and "--overwrite_output_dir true" in refused.stderr

    # written into anyway: its checkpoints at other steps rotate among themselves, the first run's stay as they were
    steps = ["--save_steps", "3", "--max_steps", "6", "--save_total_limit", "1", "--keep_checkpoints", "false"]
    with caplog.at_level(logging.INFO):
        run(*parse(*other, *steps, "--overwrite_output_dir", "true", "--output_dir", str(out)))
    assert f"Removed {out / 'checkpoint-3'} (--save_total_limit 1)" in caplog.text
    assert f"Removed {out / 'checkpoint-6'} (pass --keep_checkpoints" in caplog.text
    assert f"Kept checkpoint-4, checkpoint-2 in {out}: not written by this run" in caplog.text
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert {name: digests(out / name) for name in before} == before


@pytest.mark.slow
def test_last_resumes_only_this_runs_checkpoints(checkpointed, tmp_path, sms_file, caplog):
    """A second run (another seed) in the first one's folder, started with --resume_from_checkpoint last (as after
    being killed before its first save): it skips the first run's checkpoints, trains from the start, and moves the
    first run's checkpoint of a step it saves itself aside instead of writing into it."""
    out = fresh_copy(checkpointed, tmp_path)
    before = digests(out / "checkpoint-2")
    with caplog.at_level(logging.INFO):
        run(
            *parse(
                *CACHED, "--data_file", str(sms_file), *STEPS, "--seed", "7", "--resume_from_checkpoint", "last", "--output_dir", str(out)
            )
        )
    assert f"Skipping {out / 'checkpoint-4'}: written by another run (seed 123 there, 7 here)" in caplog.text
    assert "Resuming from" not in caplog.text and f"No intact checkpoint of this run in {out}" in caplog.text
    assert f"Moved {out / 'checkpoint-2'} to checkpoint-2.another-run" in caplog.text
    assert digests(out / "checkpoint-2.another-run") == before
    own = json.loads((out / "checkpoint-2" / MANIFEST).read_text())
    assert own["recipe"]["seed"] == 7 and own["data"] and own["id2label"] == {"0": "ham", "1": "spam"}


@pytest.mark.slow
def test_resuming_with_other_classes_or_data_is_one_error_naming_both(tmp_path, sms_file):
    data = csv_data(tmp_path / "data", sms_file)
    out = tmp_path / "run"
    run(*parse(*CACHED, *data, *STEPS, "--output_dir", str(out)))
    swapped = [*CACHED, *data, *STEPS, "--label_names", "spam", "ham", "--output_dir", str(out)]
    for resume in ("last", str(out / "checkpoint-4")):
        with pytest.raises(CheckpointError, match=r"checkpoint-4: its classes .* are \['ham', 'spam'\], this run's \['spam', 'ham'\]"):
            run(*parse(*swapped, "--resume_from_checkpoint", resume))
    three = csv_data(tmp_path / "three", sms_file, classes=("ham", "spam", "other"))
    result = run_script("train.py", *CACHED, *three, *STEPS, "--resume_from_checkpoint", "last", "--output_dir", str(out), timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "size mismatch" not in result.stderr, result.stderr[-2000:]
    assert (
        "its classes (--label_names, or the labels in the data) are ['ham', 'spam'], this run's ['ham', 'other', 'spam']" in result.stderr
    )
    assert "its data (the texts and labels of its splits) differ from this run's" in result.stderr


@pytest.mark.slow
def test_unverifiable_or_absent_checkpoints_are_refused_with_the_reason(checkpointed, tmp_path, sms_file, caplog):
    out = fresh_copy(checkpointed, tmp_path)
    folder = out / "checkpoint-4"
    with pytest.raises(CheckpointError, match=f"Cannot resume from {tmp_path / 'nowhere'}: no such folder"):
        resolve_checkpoint(str(tmp_path / "nowhere"), out)
    # an optimizer.pt the manifest does not list (copied in from elsewhere) is not trusted
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]["optimizer.pt"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=f"optimizer.pt is not in {MANIFEST}"):
        resolve_checkpoint(str(folder), out)
    # without a manifest: `last` skips it; named, an optimizer state of NaNs (what damaged bytes gave) is refused
    (folder / MANIFEST).unlink()
    state = torch.load(folder / "optimizer.pt", weights_only=True)
    next(iter(state["state"].values()))["exp_avg"].fill_(float("nan"))
    torch.save(state, folder / "optimizer.pt")
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint("last", out) == str(out / "checkpoint-2")
    assert f"Skipping {folder}: no {MANIFEST}, so its files cannot be checked" in caplog.text
    with pytest.raises(CheckpointError, match=f"Cannot resume from {folder}: optimizer.pt holds NaN or infinite values"):
        resolve_checkpoint(str(folder), out)


class PoisonAtTheEnd(TrainerCallback):
    """What a diverged run ends with: a NaN weight."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            model.out_head.weight[0, 0] = float("nan")


@pytest.mark.slow
def test_a_model_with_nan_weights_is_not_saved(tmp_path, sms_file):
    out = tmp_path / "run"
    steps = ["--max_steps", "2", "--save_strategy", "no", "--eval_strategy", "no", "--load_best_model_at_end", "false"]
    with pytest.raises(TrainingError, match=r"NaN or infinite weights \(out_head.weight\); nothing was saved"):
        run(*parse(*CACHED, "--data_file", str(sms_file), *steps, "--output_dir", str(out)), callbacks=[PoisonAtTheEnd()])
    assert not (out / "model.safetensors").exists()
