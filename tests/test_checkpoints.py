"""Checkpoints are complete models, whether Trainer trained on the cached prefix or on token ids."""

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, TrainerCallback, pipeline

from hf_spam.data import load_sms_spam, tokenize
from hf_spam.errors import CheckpointError, OptionError, TrainingError
from hf_spam.models.gpt.model_checksums import file_checksums
from hf_spam.training.checkpoints import EARLIER_RUN, MANIFEST, claim_output_dir, resolve_checkpoint
from hf_spam.training.recipe import run
from tests.helpers import ROOT, TINY, parse, run_cli, run_script

# last block + head train (the cached path) on a 2-block model from random weights
CACHED = ["--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2", "--initial_eval_batches", "0"]


def test_the_output_folder_is_claimed_once_and_settled_before_anything_is_written(tmp_path):
    """claim_output_dir on small folders (no training): a second claim on a held folder, a used folder without
    --resume or --overwrite, and a finished run asked to resume are refused; --overwrite moves only the checkpoints
    aside; a new folder a run failed in before writing is removed again."""
    used = tmp_path / "used"
    (used / "checkpoint-4").mkdir(parents=True)
    (used / "notes.txt").write_text("mine")
    with pytest.raises(OptionError, match=r"used is not empty \(checkpoint-4, notes.txt\).*--overwrite_output_dir true"):
        with claim_output_dir(used, overwrite=False, resume=None):
            pass
    with claim_output_dir(used, overwrite=False, resume="last"):
        with pytest.raises(OptionError, match="is in use by another run"):
            with claim_output_dir(used, overwrite=False, resume="last"):
                pass
    with claim_output_dir(used, overwrite=True, resume=None):
        assert sorted(p.name for p in used.iterdir()) == [EARLIER_RUN, "notes.txt"]
    assert (used / EARLIER_RUN / "checkpoint-4").is_dir()
    for name in ("all_results.json", "model_checksums.json"):
        (used / name).write_text("{}")
    with pytest.raises(OptionError, match="holds a finished run"):
        with claim_output_dir(used, overwrite=False, resume="last"):
            pass
    with pytest.raises(RuntimeError, match="failed before writing"):
        with claim_output_dir(tmp_path / "new", overwrite=False, resume=None):
            raise RuntimeError("failed before writing")
    assert not (tmp_path / "new").exists()


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


def fresh_copy(checkpointed, tmp_path, finished=True):
    """A copy to damage; ``finished=False``: as if killed during its final save (a finished run is not resumed)."""
    copy = tmp_path / "run"
    shutil.copytree(checkpointed, copy)
    if not finished:
        (copy / "all_results.json").unlink()
    return copy


@pytest.mark.slow
def test_every_checkpoint_carries_a_manifest_of_its_files(checkpointed):
    for folder in (checkpointed / "checkpoint-2", checkpointed / "checkpoint-4"):
        manifest = json.loads((folder / MANIFEST).read_text())
        on_disk = {p.name for p in folder.iterdir() if p.name != MANIFEST}
        assert set(manifest["files"]) == on_disk and {"optimizer.pt", "model.safetensors", "trainer_state.json"} <= on_disk
        assert manifest["files"]["optimizer.pt"] == file_checksums(folder / "optimizer.pt")
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
    (out / "checkpoint-4" / MANIFEST).unlink()  # saved by another tool, or killed just before the manifest
    with pytest.raises(CheckpointError, match=f"Cannot resume from {out / 'checkpoint-4'}: it has no {MANIFEST}"):
        resolve_checkpoint(str(out / "checkpoint-4"), out)


@pytest.mark.slow
def test_a_checkpoint_of_other_trainable_layers_is_a_clear_error(checkpointed, tmp_path, sms_file):
    out = fresh_copy(checkpointed, tmp_path, finished=False)
    argv = [*CACHED, "--data_file", str(sms_file), *STEPS, "--trainable_layers", "all", "--resume_from_checkpoint", "last"]
    with pytest.raises(
        CheckpointError, match=r"checkpoint-4: it trained 20 parameter tensors, this run trains 38 .*Resume with the options"
    ):
        run(*parse(*argv, "--output_dir", str(out)))
    with pytest.raises(CheckpointError, match=r"checkpoint-4: it trained 20 parameter tensors, this run trains 38"):
        run(*parse(*argv, "--resume_from_checkpoint", str(out / "checkpoint-4"), "--output_dir", str(out)))


@pytest.mark.slow
def test_resuming_with_the_cache_trains_on_the_checkpoints_weights(checkpointed, tmp_path, sms_file):
    """Resume another seed's checkpoint (random weights: the fresh model's frozen blocks differ from the
    checkpoint's): the cache must be computed from the checkpoint's weights, so the metrics in all_results.json
    are those of the saved model, recomputed here from the saved folder."""
    out = fresh_copy(checkpointed, tmp_path)
    argv = [*CACHED, "--data_file", str(sms_file), *STEPS, "--max_steps", "40", "--seed", "7", "--keep_checkpoints", "false"]
    resume = str(out / "checkpoint-4")  # named: `last` takes only this run's (this seed's) checkpoints
    resumed = tmp_path / "resumed"
    results = run(
        *parse(*argv, "--resume_from_checkpoint", resume, "--prefix_cache_dir", str(tmp_path / "cache"), "--output_dir", str(resumed))
    )
    model = AutoModelForSequenceClassification.from_pretrained(resumed, trust_remote_code=True).eval()
    splits = tokenize(load_sms_spam(sms_file), "longest_train", context_length=model.config.context_length).splits
    for split, key in (("test", "test_accuracy"), ("validation", "eval_accuracy"), ("train", "train_accuracy")):
        with torch.no_grad():
            ids, mask = torch.tensor(splits[split]["input_ids"]), torch.tensor(splits[split]["attention_mask"])
            predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        accuracy = (predicted == torch.tensor(splits[split]["label"])).double().mean().item()
        assert accuracy == pytest.approx(results[key], abs=1e-9), split
    assert json.loads((resumed / "all_results.json").read_text())["test_accuracy"] == results["test_accuracy"]


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
    return {p.name: file_checksums(p) for p in folder.iterdir() if p.is_file()}


@pytest.mark.slow
def test_a_run_refuses_another_runs_output_dir_and_never_deletes_its_checkpoints(checkpointed, tmp_path, sms_file, caplog):
    out = fresh_copy(checkpointed, tmp_path)
    before = {name: digests(out / name) for name in ("checkpoint-2", "checkpoint-4")}
    other = [*CACHED, "--data_file", str(sms_file), *STEPS, "--seed", "7"]
    refused = run_script("train.py", *other, "--output_dir", str(out), timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert f"--output_dir {out} is not empty (README.md" in refused.stderr and "--overwrite_output_dir true" in refused.stderr

    # written into anyway: the first run's checkpoints are moved aside once, as they were; this run's rotate (Trainer's own)
    steps = ["--save_steps", "3", "--max_steps", "6", "--save_total_limit", "1", "--keep_checkpoints", "false"]
    with caplog.at_level(logging.INFO):
        run(*parse(*other, *steps, "--overwrite_output_dir", "true", "--output_dir", str(out)))
    assert f"Moved checkpoint-4, checkpoint-2 into {out / EARLIER_RUN}" in caplog.text
    assert f"Removed {out / 'checkpoint-6'} (pass --keep_checkpoints" in caplog.text
    assert not list(out.glob("checkpoint-*")) and json.loads((out / "all_results.json").read_text())["train_steps_per_second"] > 0
    assert {name: digests(out / EARLIER_RUN / name) for name in before} == before


@pytest.mark.slow
def test_resume_never_takes_over_another_run_or_a_finished_one(checkpointed, tmp_path, sms_file):
    """Red team v3: `--resume_from_checkpoint last` with another seed in a finished run's folder said "No intact
    checkpoint of this run; training from the start" and replaced that run's model, metrics and card (exit 0). Now a
    finished run is refused, and so is a folder whose checkpoints another run wrote; nothing in either is changed."""
    out = fresh_copy(checkpointed, tmp_path)
    before = {p.relative_to(out): file_checksums(p) for p in out.rglob("*") if p.is_file()}
    argv = [*CACHED, "--data_file", str(sms_file), *STEPS, "--resume_from_checkpoint", "last", "--output_dir", str(out)]
    for seed in ("7", "123"):
        with pytest.raises(OptionError, match=f"--output_dir {out} holds a finished run .* nothing to resume"):
            run(*parse(*argv, "--seed", seed))
    for name in ("all_results.json", "model_checksums.json"):  # as if killed before the final save: its checkpoints remain
        (out / name).unlink()
        del before[Path(name)]
    with pytest.raises(CheckpointError, match=r"checkpoint-4 was written by another run \(seed 123 there, 7 here\)"):
        run(*parse(*argv, "--seed", "7"))
    assert {p.relative_to(out): file_checksums(p) for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_two_runs_on_one_output_dir_cannot_both_write_it(tmp_path, sms_file):
    """Red team v3: two `hf-spam train` started together on one --output_dir both exited 0, the folder holding whichever
    finished last. The second is refused at once while the first holds the folder; the first's model is whole."""
    out = tmp_path / "run"
    argv = ["--data_file", str(sms_file), *CACHED, *STEPS, "--output_dir", str(out)]
    first = subprocess.Popen(
        [sys.executable, "tests/support/train_probe.py", "--probe_pause_after_save", "2", *argv],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert next((line.strip() for line in first.stdout if line.startswith("saved")), None) == "saved checkpoint-2"
        for extra in ([], ["--overwrite_output_dir", "true"], ["--resume_from_checkpoint", "last"]):
            second = run_script("train.py", *argv, *extra, timeout=600)
            assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
            assert f"--output_dir {out} is in use by another run" in second.stderr, extra
    finally:
        first.stdin.close()  # the first run goes on
        first.stdout.read()
    assert first.wait(timeout=600) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True) is not None


@pytest.mark.slow
def test_resuming_with_other_classes_or_data_is_one_error_naming_both(tmp_path, sms_file):
    data = csv_data(tmp_path / "data", sms_file)
    out = tmp_path / "run"
    run(*parse(*CACHED, *data, *STEPS, "--output_dir", str(out)))
    (out / "all_results.json").unlink()  # as if killed during its final save
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
    # without a manifest: `last` skips it, and named it is refused (an optimizer state of NaNs could not be told apart)
    (folder / MANIFEST).unlink()
    state = torch.load(folder / "optimizer.pt", weights_only=True)
    next(iter(state["state"].values()))["exp_avg"].fill_(float("nan"))
    torch.save(state, folder / "optimizer.pt")
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint("last", out) == str(out / "checkpoint-2")
    assert f"Skipping {folder}: it has no {MANIFEST}" in caplog.text
    with pytest.raises(CheckpointError, match=f"Cannot resume from {folder}: it has no {MANIFEST}"):
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


@pytest.mark.slow
def test_a_full_or_read_only_disk_during_training_is_one_line_and_its_own_exit_status(sms_file, small_or_read_only):
    """Red team v3 (issue 40): a disk that fills while a run saves its checkpoint (safetensors' own error, the OS's
    refusal inside it) or refuses the output folder: one line naming --output_dir and the reason, exit 74."""
    reasons = {"read_only": "the file system is read-only" if os.geteuid() == 0 else "permission denied", "small": "the disk is full"}
    for name, disk in small_or_read_only.items():
        target = disk / "run"
        result = run_cli(
            "train", "--data_file", str(sms_file), *TINY, "--max_steps", "2", "--initial_eval_batches", "0", "--output_dir", str(target)
        )
        assert result.returncode == 74 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert re.findall(r"ERROR hf_spam: .*", result.stderr) == [  # after the time (and the bar, on a pipe)
            f"ERROR hf_spam: --output_dir {target}: cannot write there ({reasons[name]}); its complete checkpoints are kept, and "
            "--resume_from_checkpoint last continues from the last one. Free space or fix its permissions, or choose another --output_dir."
        ], name
