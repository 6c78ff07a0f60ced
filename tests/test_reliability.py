"""Bad inputs, interrupted training, unsafe files, no network: clear errors or stated handling, never a crash."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hf_spam import GPTForSequenceClassification, save_with_tokenizer
from hf_spam.cli import main as cli_main
from hf_spam.data import DataError, describe, load_sms_spam, load_text_classification
from hf_spam.errors import UnusableModelError
from hf_spam.models.gpt.model_checksums import ModelFilesError, write_checksums
from hf_spam.serving.classifier import classify, load_classifier, read_text_file
from hf_spam.training.checkpoints import MANIFEST, resolve_checkpoint, write_manifest
from tests.helpers import ROOT, run_script, tiny_config

TINY_RUN = ["--weights", "random", "--config_overrides", "n_layers=1,emb_dim=32,n_heads=2", "--initial_eval_batches", "0"]


@pytest.fixture(scope="module")
def saved_classifier(gpt2_bpe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    save_with_tokenizer(GPTForSequenceClassification(tiny_config(id2label={0: "ham", 1: "spam"})), folder)
    return load_classifier(folder)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.text(max_size=400) | st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=3000), min_size=1, max_size=6)
)
def test_any_unicode_text_gets_a_label_and_probabilities_that_sum_to_one(saved_classifier, texts):
    results = classify(saved_classifier, texts, batch_size=4)
    assert len(results) == len(texts)
    for result in results:
        assert result["label"] in ("ham", "spam")
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= result["score"] <= 1.0


def test_awkward_texts_and_wrong_types(saved_classifier, caplog):
    texts = ["", "   \t\n", "\x00\x07\x1b[31m control", "🙂🚀👩‍👩‍👧", "مرحبا بالعالم", "你好，世界", "Win! " * 500]
    with caplog.at_level(logging.WARNING):
        results = classify(saved_classifier, texts)
    assert [r["text"] for r in results] == texts
    expected_tokens = len(saved_classifier.tokenizer(texts[6])["input_ids"])
    assert f"Text 6 has {expected_tokens} tokens; only its first 32 are classified." in caplog.text
    with pytest.raises(TypeError, match="Text 1 is NoneType, not str"):
        classify(saved_classifier, ["fine", None])
    with pytest.raises(TypeError, match="Text 0 is int"):
        classify(saved_classifier, [42])


def test_non_utf8_lines_in_a_text_file_are_replaced_and_reported(tmp_path, caplog):
    (tmp_path / "texts.txt").write_bytes(b"hello\n\xff\xfe broken\r\nok \xef\xbf\xbd literal\n")
    with caplog.at_level(logging.WARNING):
        texts = read_text_file(tmp_path / "texts.txt")
    assert texts == ["hello", "\ufffd\ufffd broken", "ok \ufffd literal"]
    assert "lines [2] are not valid UTF-8" in caplog.text


def test_another_vocabulary_is_refused(gpt2_bpe, tmp_path):
    save_with_tokenizer(GPTForSequenceClassification(tiny_config()), tmp_path)
    words = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}))
    with pytest.raises(UnusableModelError, match="tokenizer.json has 888 bytes"):  # not the tokenizer saved with the model
        load_classifier(tmp_path)
    write_checksums(tmp_path)  # saved with the model on purpose: still not the model's vocabulary
    with pytest.raises(UnusableModelError, match="is not GPT-2's 50257-token BPE"):
        load_classifier(tmp_path)


def test_corrupt_or_mismatched_checkpoints_fail_loudly(gpt2_bpe, tmp_path):
    save_with_tokenizer(GPTForSequenceClassification(tiny_config()), tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        GPTForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match=f"{tmp_path}: model.safetensors is truncated or corrupt .*incomplete metadata"):
        GPTForSequenceClassification.from_pretrained(tmp_path)


def damage_data(path: Path) -> None:
    """64 bytes of the tensors' data zeroed, the size and the safetensors header untouched (as a bad disk or copy does)."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little") + 1024
    raw[start : start + 64] = bytes(64)
    path.write_bytes(bytes(raw))


def edit_config(folder: Path, **fields) -> None:
    """One value changed in place, as a user edits the file (the same size: only the checksum can tell)."""
    text = (folder / "config.json").read_text()
    for name, value in fields.items():
        old = f'"{name}": {json.loads(text)[name]}'
        assert len(old) == len(f'"{name}": {value}') and old in text
        text = text.replace(old, f'"{name}": {value}')
    (folder / "config.json").write_text(text)


@pytest.fixture
def saved_folder(gpt2_bpe, tmp_path):
    folder = tmp_path / "model"
    torch.manual_seed(0)
    save_with_tokenizer(GPTForSequenceClassification(tiny_config(id2label={0: "ham", 1: "spam"})), folder)
    return folder


@pytest.mark.slow
def test_damaged_weights_are_refused_by_classify_and_by_the_shipped_code(saved_folder):
    """Bytes of the weights' data changed at the same size load without complaint in safetensors (the model then
    printed `ham nan`): the checksums saved beside them refuse it, in hf_spam and in the code shipped with the model."""
    covered = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert json.loads((saved_folder / "model_checksums.json").read_text())["files"].keys() == covered
    damage_data(saved_folder / "model.safetensors")
    result = run_script("classify.py", str(saved_folder), "Free entry: win a prize")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == "", result.stderr[-2000:]
    assert f"{saved_folder}: model.safetensors does not match its checksum in model_checksums.json" in result.stderr
    script = f"""
import sys
sys.modules["hf_spam"] = None  # the code saved with the model, as someone without hf_spam loads it
from transformers import AutoModelForSequenceClassification
try:
    AutoModelForSequenceClassification.from_pretrained({str(saved_folder)!r}, trust_remote_code=True)
except OSError as error:
    print(type(error).__name__, error)
"""
    loaded = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=300)
    assert "ModelFilesError" in loaded.stdout and "does not match its checksum" in loaded.stdout, loaded.stdout + loaded.stderr[-2000:]


def swap_vocabulary_ids(folder: Path) -> None:
    """Two tokens' ids exchanged in place in tokenizer.json (the file keeps its size), as a hand edit or another
    vocabulary would: valid-looking ids that only the checksum can tell from the saved ones."""
    text = (folder / "tokenizer.json").read_text()
    assert '"Ġfree": 1479,' in text and '"Ġwin": 1592,' in text
    (folder / "tokenizer.json").write_text(text.replace('"Ġfree": 1479,', '"Ġfree": 1592,', 1).replace('"Ġwin": 1592,', '"Ġwin": 1479,', 1))


def keep_only_config_entry(folder: Path, keep_own_checksum: bool) -> None:
    manifest = json.loads((folder / "model_checksums.json").read_text())
    kept = {"files": {"config.json": manifest["files"]["config.json"]}}
    if keep_own_checksum:
        kept["files_checksum"] = manifest["files_checksum"]
    (folder / "model_checksums.json").write_text(json.dumps(kept))


def test_what_the_manifest_covers_cannot_be_changed_or_dropped_unnoticed(saved_folder, tmp_path, caplog):
    """Red team v3, each silent before: a swapped vocabulary in tokenizer.json (the tokenizer was not covered; accuracy
    moved), entries deleted from model_checksums.json (damaged weights then loaded), damaged weights with the manifest
    deleted (`"score": NaN` for every text, exit 0). Each is now one line, exit 2, naming the file."""
    cases = {
        "tokenizer": (swap_vocabulary_ids, "tokenizer.json does not match its checksum in model_checksums.json"),
        "entries": (
            lambda folder: (damage_data(folder / "model.safetensors"), keep_only_config_entry(folder, keep_own_checksum=True)),
            "model_checksums.json was edited after it was saved",
        ),
        "entries and the manifest's own checksum": (
            lambda folder: (damage_data(folder / "model.safetensors"), keep_only_config_entry(folder, keep_own_checksum=False)),
            "model.safetensors is not in model_checksums.json",
        ),
        "no manifest": (
            lambda folder: (damage_data(folder / "model.safetensors"), (folder / "model_checksums.json").unlink()),
            "model_checksums.json is missing, so its files cannot be checked",
        ),
    }
    for name, (damage, message) in cases.items():
        folder = tmp_path / name
        shutil.copytree(saved_folder, folder)
        damage(folder)
        with pytest.raises(UnusableModelError, match=message):
            load_classifier(folder)
        caplog.clear()
        with pytest.raises(SystemExit) as exited:
            cli_main(["classify", str(folder), "Free entry: win a prize"])
        assert exited.value.code == 2 and message in caplog.text, name
    assert GPTForSequenceClassification.from_pretrained(tmp_path / "no manifest", verify_checksums=False).config.n_layers == 2


def test_a_nan_score_is_never_an_answer(saved_folder):
    """Weights that compute NaN (damage the checksums cannot see: loaded unchecked, or changed in memory) are an error
    naming the model, not a `NaN` score or a label chosen among NaNs."""
    classifier = load_classifier(saved_folder)
    with torch.no_grad():
        classifier.model.out_head.weight[0, 0] = float("nan")
    with pytest.raises(UnusableModelError, match=f"{saved_folder}: the model computed NaN or infinite scores for 2 of 2 texts"):
        classify(classifier, ["Free entry: win a prize", "see you at 6"])


@pytest.mark.parametrize("fields", [{"n_layers": 1}, {"n_layers": 3}, {"n_heads": 2}])
def test_an_edited_config_is_refused(saved_folder, fields):
    """config.json of other sizes than the weights: refused by its checksum, and without the checksums file too;
    loaded unchecked on purpose, layers that the weights lack or hold beyond the config are still an error. A head
    count (every tensor keeps its shape) is caught only by the checksum."""
    edit_config(saved_folder, **fields)
    with pytest.raises(ModelFilesError, match="config.json does not match its checksum in model_checksums.json"):
        GPTForSequenceClassification.from_pretrained(saved_folder)
    (saved_folder / "model_checksums.json").unlink()
    with pytest.raises(ModelFilesError, match="model_checksums.json is missing"):
        GPTForSequenceClassification.from_pretrained(saved_folder)
    if "n_layers" in fields:
        with pytest.raises(ModelFilesError, match="config.json does not describe the saved weights"):
            GPTForSequenceClassification.from_pretrained(saved_folder, verify_checksums=False)
    else:
        assert GPTForSequenceClassification.from_pretrained(saved_folder, verify_checksums=False).config.n_heads == 2


def test_classify_script_reports_bad_options_and_files_in_one_line(saved_folder, tmp_path):
    for argv, message in (
        (["--batch_size", "0", "a text"], "--batch_size 0: give a positive number of texts per batch"),
        (["--file", str(tmp_path)], f"--file {tmp_path} is a folder: give a UTF-8 text file"),
        (["--file", str(tmp_path / "missing.txt")], "missing.txt does not exist"),
    ):
        result = run_script("classify.py", str(saved_folder), *argv)
        assert result.returncode == 2 and "Traceback" not in result.stderr and message in result.stderr, (argv, result.stderr[-2000:])
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    weights = saved_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = run_script("classify.py", str(saved_folder), "a text")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{saved_folder}: model.safetensors is truncated or corrupt" in result.stderr


def test_bom_crlf_blank_lines_header_and_duplicates(tmp_path, sms_file, caplog):
    clean = sms_file.read_bytes()
    (tmp_path / "windows").write_bytes(b"\xef\xbb\xbf" + clean.replace(b"\n", b"\r\n").replace(b"\r\nham", b"\r\n\r\nham", 3))
    with caplog.at_level(logging.WARNING):
        assert load_sms_spam(tmp_path / "windows")["test"]["text"] == load_sms_spam(sms_file)["test"]["text"]
    assert "byte-order mark" in caplog.text and "5577 CRLF and 0 CR line endings" in caplog.text and "skipped 3 blank lines" in caplog.text
    (tmp_path / "header").write_bytes(b"label\ttext\n" + clean)
    with pytest.raises(DataError, match="line 1: unknown label 'label'.*header row"):
        load_sms_spam(tmp_path / "header")
    report = describe(load_sms_spam(sms_file))
    assert "duplicate texts kept (as the book does): train " in report and "also in train: validation " in report


def test_unseen_classes_and_empty_splits(tmp_path, caplog):
    (tmp_path / "named").mkdir()
    (tmp_path / "named" / "train.csv").write_text("text,label\n" + "".join(f"t{i},a\nu{i},b\n" for i in range(10)))
    (tmp_path / "named" / "test.csv").write_text("text,label\nx,a\ny,c\n")
    with pytest.raises(DataError, match=r"test.csv: classes \['c'\] never occur in the training data.*--allow_unseen_labels"):
        load_text_classification(tmp_path / "named")
    with caplog.at_level(logging.WARNING):
        splits = load_text_classification(tmp_path / "named", allow_unseen_labels=True).splits
    assert "test.csv: classes ['c'] never occur in the training data" in caplog.text
    assert splits["train"].features["label"].names == ["a", "b", "c"] and len(splits["test"]) == 2 and len(splits["validation"]) == 2
    (tmp_path / "few.csv").write_text("text,label\na,x\nb,y\nc,x\n")
    with pytest.raises(DataError, match="The validation split is empty"):
        load_text_classification(tmp_path / "few.csv")


@pytest.mark.slow
def test_offline_hub_error_says_what_to_do(tmp_path):
    script = "from hf_spam import GPTForCausalLM; GPTForCausalLM.from_gpt2('gpt2-medium')"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert (
        "Could not load GPT-2 weights 'openai-community/gpt2-medium'" in result.stderr
        and "local transformers GPT-2 folder" in result.stderr
    )


def test_half_written_checkpoints_are_skipped(tmp_path, caplog):
    """`last` takes the newest checkpoint that is complete and has its manifest: a half-written one (no
    trainer_state.json) and one without a manifest (its files cannot be checked) are skipped, saying why."""
    from safetensors.torch import save_file

    for step, complete, manifest in ((10, True, True), (20, True, False), (30, False, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        if complete:
            save_file({"w": torch.zeros(2)}, folder / "model.safetensors")
            torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
            (folder / "trainer_state.json").write_text("{}")
        if manifest:
            write_manifest(folder, {})
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint("last", tmp_path) == str(tmp_path / "checkpoint-10")
    assert "checkpoint-30: no trainer_state.json" in caplog.text
    assert f"checkpoint-20: it has no {MANIFEST} (saving was interrupted before it, or another tool wrote it)" in caplog.text
    with pytest.raises(ValueError, match="Cannot resume from .*checkpoint-30: no trainer_state.json"):
        resolve_checkpoint(str(tmp_path / "checkpoint-30"), tmp_path)
    # named, a checkpoint without a manifest is refused too (red team v3: one exponent bit flipped in its optimizer.pt,
    # finite at 4e36, trained the whole run and failed at the end)
    with pytest.raises(ValueError, match=f"Cannot resume from .*checkpoint-20: it has no {MANIFEST} .* cannot be checked"):
        resolve_checkpoint(str(tmp_path / "checkpoint-20"), tmp_path)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_and_metrics(tmp_path, sms_file, request):
    """SIGKILL after a checkpoint, resume with --resume_from_checkpoint last: bitwise the uninterrupted run. Also when
    killed after the checkpoint of the last step, during the final save (red team v3: Trainer then trained a 61st step)."""
    common = ["--data_file", str(sms_file), *TINY_RUN, "--max_steps", "60"]
    common += ["--save_strategy", "steps", "--save_steps", "20", "--load_best_model_at_end", "false"]
    # the killed runs are processes of their own; the others run in this one, with the same one thread, so that
    # float rounding is the same in all of them
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    reference = run_script("train.py", *common, "--output_dir", str(tmp_path / "whole"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    timing = ("runtime", "per_second", "preparation_time")
    expected = {k: v for k, v in json.loads((tmp_path / "whole" / "all_results.json").read_text()).items() if not k.endswith(timing)}
    whole = load_file(tmp_path / "whole" / "model.safetensors")

    for step in (20, 60):
        interrupted = tmp_path / f"interrupted-{step}"
        process = subprocess.Popen(
            [
                sys.executable,
                "tests/support/train_probe.py",
                "--probe_pause_after_save",
                str(step),
                *common,
                "--output_dir",
                str(interrupted),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        said = next((line.strip() for line in process.stdout if line.startswith("saved checkpoint-")), None)  # Trainer logs there too
        assert said == f"saved checkpoint-{step}", f"the run ended before writing checkpoint-{step}"
        process.send_signal(signal.SIGKILL)  # the run is paused right after the checkpoint is complete
        process.wait()
        assert (interrupted / f"checkpoint-{step}" / MANIFEST).is_file()
        assert not (interrupted / "all_results.json").exists(), "the run must have been killed before finishing"
        resumed = run_script("train.py", *common, "--output_dir", str(interrupted), "--resume_from_checkpoint", "last")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"Resuming from {interrupted / f'checkpoint-{step}'}" in resumed.stderr
        again = load_file(interrupted / "model.safetensors")
        assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole), step
        metrics = json.loads((interrupted / "all_results.json").read_text())
        assert {k: v for k, v in metrics.items() if not k.endswith(timing) and k != "train_running_loss"} == {
            k: v for k, v in expected.items() if k != "train_running_loss"
        }, step
    assert "nothing is left to train" in resumed.stderr


def test_a_folder_without_a_loadable_tokenizer_is_one_line(saved_folder, tmp_path):
    """A folder saved by `model.save_pretrained` alone, or one a kill left between the weights and the tokenizer files:
    transformers' "You need to have sentencepiece or tiktoken installed" traceback became one line naming the folder."""
    folder = tmp_path / "no tokenizer"
    shutil.copytree(saved_folder, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    write_checksums(folder)  # as the model's own save left it: its files are whole, it has no tokenizer
    with pytest.raises(UnusableModelError, match=f"{folder}: its tokenizer could not be loaded \\(it has no tokenizer.json\\)"):
        load_classifier(folder)
