"""Sharing on the Hub for real: push with Trainer's --push_to_hub through the real huggingface_hub
client to a local Hub double over HTTP, then load by repo id in a fresh process without hf_spam."""

import json
import os
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from hf_spam.models.gpt import SHIPPED_FILES
from hf_spam.serving.classifier import load_classifier
from tests.helpers import run_script
from tests.support import hub_double

TOKEN = "hf_test_token_for_the_double"


@pytest.fixture
def hub(tmp_path):
    server, state = hub_double.serve()
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",  # the double speaks the LFS protocol, not Xet's storage service
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("HF_TOKEN", None)
    yield env, state
    server.shutdown()


LOAD = """
import json, os, sys
sys.modules["hf_spam"] = None  # a user who never installed hf_spam
from transformers import AutoModelForSequenceClassification, pipeline
repo, texts = sys.argv[1], json.loads(sys.argv[2])
try:
    AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True, token=False)
    anonymous = "loaded"
except Exception as error:
    anonymous = type(error).__name__
model = AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True, token=os.environ["TOKEN"])
classify = pipeline("text-classification", model=repo, trust_remote_code=True, top_k=None, token=os.environ["TOKEN"])
print(json.dumps({"anonymous": anonymous, "class": type(model).__name__, "scores": classify(texts)}))
"""


@pytest.mark.slow
def test_push_then_load_by_repo_id_without_hf_spam(tmp_path, sms_file, hub):
    env, state = hub
    out = tmp_path / "out"
    argv = ["--data_file", str(sms_file), "--weights", "random"]
    argv += ["--config_overrides", "n_layers=1,emb_dim=64,n_heads=2", "--num_train_epochs", "1", "--initial_eval_batches", "0"]
    argv += ["--push_to_hub", "--hub_model_id", "reader/spam-tiny", "--hub_token", TOKEN, "--hub_private_repo", "true"]
    argv += ["--hub_strategy", "checkpoint", "--output_dir", str(out)]
    result = run_script("train.py", *argv, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Pushed to {env['HF_ENDPOINT']}/reader/spam-tiny" in result.stderr

    repo = state.repos["reader/spam-tiny"]
    assert repo.private
    for name in ("model.safetensors", "config.json", "model_checksums.json", *SHIPPED_FILES, "tokenizer.json"):
        assert name in repo.files, name
    for name in ("README.md", "loss.png", "accuracy.png", "all_results.json"):
        assert name in repo.files, name
    assert "model.safetensors" in repo.lfs_paths, "the weights (13 MB) travel through LFS"
    assert repo.files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert not [p for p in repo.files if p.startswith("checkpoint-")], "checkpoints are not pushed"
    assert (
        "last-checkpoint/model.safetensors" in repo.files and "last-checkpoint/trainer_state.json" in repo.files
    )  # --hub_strategy checkpoint
    # the pushed model's checksums (checked when it is loaded by repo id below), and the pushed checkpoint's manifest
    assert repo.files["model_checksums.json"] == (out / "model_checksums.json").read_bytes()
    assert "last-checkpoint/hf_spam_checkpoint.json" in repo.files and "last-checkpoint/model_checksums.json" in repo.files

    card = ModelCard(repo.files["README.md"].decode())
    metrics = json.loads((out / "all_results.json").read_text())
    test_accuracy = [r for r in card.data.eval_results if r.dataset_split == "test" and r.metric_type == "accuracy"]
    assert test_accuracy and test_accuracy[0].metric_value == round(metrics["test_accuracy"], 4)
    assert card.data.pipeline_tag == "text-classification" and card.data.library_name == "transformers"

    texts = ["WINNER!! You have won a 1000 cash prize, call now", "see you at the station at 5"]
    loaded = subprocess.run(
        [sys.executable, "-I", "-c", LOAD, "reader/spam-tiny", json.dumps(texts)],
        env={**env, "TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert loaded.returncode == 0, loaded.stderr[-4000:]
    answer = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert answer["anonymous"] == "OSError", "a private repository must need the token"
    assert answer["class"] == "GPTForSequenceClassification"

    from transformers import pipeline

    local = pipeline("text-classification", model=str(out), trust_remote_code=True, top_k=None)(texts)
    for remote_row, local_row in zip(answer["scores"], local, strict=True):
        assert {r["label"]: r["score"] for r in remote_row} == pytest.approx({r["label"]: r["score"] for r in local_row}, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("failure", "reason"), [(500, "HTTP 500: "), ("drop", "RemoteProtocolError: ")])
def test_a_refused_or_dropped_upload_is_one_line_and_the_run_is_kept(tmp_path, sms_file, hub, failure, reason):
    """Red team v3: HTTP 500 on the commit gave an HfHubHTTPError traceback, a dropped connection a RuntimeError (the
    run intact both times). Now one line naming the repo, the reason, where the run is and the command that uploads
    it, exit 69 (the Hub's or the network's failure, not the user's)."""
    env, state = hub
    state.failing_commits = failure
    out = tmp_path / "out"
    argv = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=1,emb_dim=64,n_heads=2"]
    argv += ["--max_steps", "2", "--initial_eval_batches", "0", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    argv += ["--push_to_hub", "--hub_model_id", "reader/spam-tiny", "--hub_token", TOKEN, "--output_dir", str(out)]
    result = run_script("train.py", *argv, env=env, timeout=600)
    assert result.returncode == 69 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"--push_to_hub: the upload to reader/spam-tiny failed ({reason}" in errors[0], errors
    assert f"The run is saved in {out}" in errors[0] and f"hf upload reader/spam-tiny {out} --exclude 'checkpoint-*'" in errors[0]
    assert ("POST", "/api/models/reader/spam-tiny/commit/main") in state.requests and state.repos["reader/spam-tiny"].files == {}
    assert json.loads((out / "all_results.json").read_text())["test_accuracy"] >= 0
    assert load_classifier(str(out)).model.config.id2label == {0: "ham", 1: "spam"}  # the kept run loads, its checksums hold


@pytest.mark.slow
def test_a_hub_repo_without_a_model_config_is_one_line(hub):
    """Red team v3: `hf-spam classify user/repo` on a repo without config.json was transformers' "ValueError:
    Unrecognized model" traceback."""
    env, state = hub
    state.repos["reader/notes"] = hub_double.Repo(owner_token=None, private=False, files={"README.md": b"# notes\n"}, commits=["a" * 40])
    result = run_script("classify", "reader/notes", "hello", env=env, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "ERROR hf_spam: reader/notes: this Hub repo holds no model config.json that transformers can read (Unrecognized model in "
        "reader/notes. Should have a `model_type` key in its config.json.). Give the folder hf-spam train wrote (its --output_dir), "
        "or the Hub id it pushed to (its --hub_model_id)."
    ], result.stderr[-3000:]
