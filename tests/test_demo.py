"""The Gradio demo, driven over HTTP with gradio_client and in a real browser (Debian's Chromium through
Selenium), against what hf-spam classify says for the same model; and the Space folder it writes."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from hf_spam.serving.classifier import classify, load_classifier
from hf_spam.training.recipe import run
from tests.helpers import ROOT, parse, run_script

SPAM = "WINNER!! As a valued network customer you have been selected to receive a prize reward! Call now"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sms_file):
    out = tmp_path_factory.mktemp("demo_model")
    argv = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=1,emb_dim=64,n_heads=2"]
    run(
        *parse(
            *argv,
            "--trainable_layers",
            "all",
            "--learning_rate",
            "1e-3",
            "--max_steps",
            "40",
            "--initial_eval_batches",
            "0",
            "--output_dir",
            str(out),
        )
    )
    return out


@contextlib.contextmanager
def serving(model, *options: str):
    """hf-spam demo on a free local port; yields its URL once the app says it serves."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "hf_spam.cli", "demo", str(model), "--port", str(port), *options],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in process.stdout:  # the app says when it serves
        lines.append(line)
        if f"127.0.0.1:{port}" in line:
            break
    else:
        raise AssertionError("the demo exited before serving:\n" + "".join(lines[-40:]))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def demo_url(trained):
    with serving(trained) as url:
        yield url


def expected(trained, text):
    return classify(load_classifier(trained), [text])[0]


@pytest.mark.slow
def test_the_app_answers_like_classify_py_over_http(trained, demo_url):
    from gradio_client import Client

    client = Client(demo_url, verbose=False)
    answer = client.predict(SPAM, api_name="/classify")
    reference = expected(trained, SPAM)
    assert answer["label"] == reference["label"]
    confidences = {c["label"]: c["confidence"] for c in answer["confidences"]}
    assert confidences == pytest.approx(reference["scores"], abs=1e-6)
    with pytest.raises(Exception, match="Type or paste a message to classify"):
        client.predict("   ", api_name="/classify")


@pytest.mark.slow
def test_an_exported_folder_serves_the_same_answer_on_onnx_runtime(trained, tmp_path):
    from gradio_client import Client

    from hf_spam.serving import export_classifier

    export_classifier(trained, tmp_path / "onnx")
    with serving(tmp_path / "onnx") as url:  # the backend is the folder's
        answer = Client(url, verbose=False).predict(SPAM, api_name="/classify")
    reference = expected(trained, SPAM)
    assert answer["label"] == reference["label"]
    assert {c["label"]: c["confidence"] for c in answer["confidences"]} == pytest.approx(reference["scores"], abs=1e-4)


@pytest.mark.slow
def test_a_person_types_a_message_in_a_real_browser(trained, demo_url, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and chromedriver):
        pytest.skip("needs Chromium and its driver on PATH (Debian: apt install chromium chromium-driver, as .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        driver.get(demo_url)
        wait = WebDriverWait(driver, 60)
        box = wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#message textarea")))
        box.send_keys(SPAM)
        driver.find_element(By.CSS_SELECTOR, "#classify").click()
        reference = expected(trained, SPAM)
        shown = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#prediction").text.strip() or None)
        wait.until(lambda d: reference["label"] in d.find_element(By.CSS_SELECTOR, "#prediction").text)
        shown = driver.find_element(By.CSS_SELECTOR, "#prediction").text
        first_line = [line for line in shown.splitlines() if line.strip() and line.strip() != "Prediction"][0]
        assert first_line.strip() == reference["label"], shown
        screenshot = tmp_path / "demo.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        driver.quit()


@pytest.mark.slow
def test_the_space_folder_is_ready_to_upload(trained, tmp_path):
    card = ModelCard.load(trained / "README.md")
    assert [w["text"] for w in card.data.to_dict()["widget"]], "the model card carries example texts for the demo"
    result = run_script("demo.py", "reader/spam-tiny", "--space_dir", str(tmp_path / "space"), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    space = tmp_path / "space"
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    meta = ModelCard.load(space / "README.md").data.to_dict()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == ["reader/spam-tiny"]
    app = (space / "app.py").read_text()
    assert 'MODEL = os.environ.get("HF_SPAM_MODEL", "reader/spam-tiny")' in app
    # the Space has no hf_spam: app.py must import, and build the app, where hf_spam cannot be imported
    check = "import sys; sys.modules['hf_spam'] = None; sys.path.insert(0, sys.argv[1]); import app; print(app.MODEL, callable(app.build))"
    loaded = subprocess.run([sys.executable, "-I", "-c", check, str(space)], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0 and loaded.stdout.split() == ["reader/spam-tiny", "True"], loaded.stderr[-2000:]
    with pytest.raises(ValueError, match="Hub id"):
        from hf_spam.demo import write_space

        write_space(str(trained), tmp_path / "bad")


@pytest.mark.slow
def test_multi_label_and_regression_models_answer_over_http_like_classify_py(gpt2_bpe, tmp_path):
    """A multi-label model's app lists the classes above its --threshold beside every probability; a
    regression model's shows its values; both as the library's classify says."""
    import torch
    from gradio_client import Client

    from hf_spam import GPTForSequenceClassification, save_with_tokenizer
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    names = {0: "spam", 1: "long", 2: "digits"}
    multi = GPTForSequenceClassification(tiny_config(num_labels=3, id2label=names, problem_type="multi_label_classification"))
    with torch.no_grad():
        multi.out_head.weight.normal_(0, 2.0)  # probabilities well away from 0.5, some on either side of 0.4
    save_with_tokenizer(multi, tmp_path / "multi")
    regression = GPTForSequenceClassification(tiny_config(num_labels=1, id2label={0: "stars"}, problem_type="regression"))
    save_with_tokenizer(regression, tmp_path / "regression")
    reference = classify(load_classifier(tmp_path / "multi"), [SPAM], threshold=0.4)[0]
    with serving(tmp_path / "multi", "--threshold", "0.4") as url:
        scores, chosen = Client(url, verbose=False).predict(SPAM, api_name="/classify")
    assert {c["label"]: c["confidence"] for c in scores["confidences"]} == pytest.approx(reference["scores"], abs=1e-6)
    assert chosen == (", ".join(reference["labels"]) or "none above 0.4")
    value = classify(load_classifier(tmp_path / "regression"), [SPAM])[0]["values"]
    with serving(tmp_path / "regression") as url:
        answer = Client(url, verbose=False).predict(SPAM, api_name="/classify")
    assert answer == pytest.approx(value, abs=1e-5)
