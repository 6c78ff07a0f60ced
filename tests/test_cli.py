"""The installed command and the package layout as a user meets them: ``hf-spam`` and its subcommands (help with
examples, one-line errors, exit 2), the prefix cache's options under their old names, a model folder saved before
the sub-package layout, and a plain (non-editable) install into a fresh virtual environment."""

import codecs
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import venv
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_spam import GPTForSequenceClassification, save_with_tokenizer
from hf_spam.cli import COMMANDS
from hf_spam.cli import main as cli_main
from hf_spam.cli.train import parse_command_line
from hf_spam.cli.train import parser as train_parser
from hf_spam.errors import DataError, OptionError
from hf_spam.serving.classifier import classify, load_classifier, read_text_file
from hf_spam.training.model_setup import build_model
from hf_spam.training.recipe import run
from tests.helpers import ROOT, parse, run_cli, run_script, tiny_config

FIXTURES = Path(__file__).parent / "fixtures"


TEXTS = ["You won a free prize! Text WIN to 80080", "See you at 5?"]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_shows_its_options_and_examples(command):
    result = run_script(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: hf-spam {command}") and "\nexamples:\n  hf-spam " + command in result.stdout


def test_train_help_shows_the_recipes_options_by_group_and_help_all_every_option():
    """`hf-spam train --help` was 794 lines, 155 of them a usage block listing every TrainingArguments option."""
    short, every = run_cli("train", "--help"), run_cli("train", "--help-all")
    assert short.returncode == every.returncode == 0 and short.stderr == every.stderr == ""
    assert short.stdout.startswith("usage: hf-spam train [options]") and len(short.stdout.splitlines()) < 300
    headings = [line for line in short.stdout.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == [
        "examples:",
        "options:",
        "the model:",
        "the data:",
        "training (Trainer's TrainingArguments, with chapter 6's defaults):",
    ]
    for option in ("--trainable_layers", "--data_file", "--learning_rate", "--output_dir", "--prefix_cache_dir", "--push_to_hub"):
        assert f"  {option} " in short.stdout, option
    assert "--adam_beta1" not in short.stdout and "  --adam_beta1 " in every.stdout and len(every.stdout) > 2 * len(short.stdout)
    # the hidden options still parse (only their help is left out)
    _, _, args = parse("--output_dir", "o", "--adam_beta1", "0.8")
    assert args.adam_beta1 == 0.8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "hf-spam: error: no command 'frobnicate'; choose one of train, classify"),
        (
            ["train", "--output_dir", "runs/none", "--learning_rate", "fast"],
            "hf-spam train: error: argument --learning_rate/--learning-rate: invalid float value: 'fast'",
        ),
        (["classify", "runs/none", "hello"], "ERROR hf_spam: runs/none: no such folder here, and no Hub model of that id could be loaded"),
        (["train", "--output_dir", "runs/none", "--threshold", "2"], "--threshold 2.0: give a probability in [0, 1)"),
        (
            ["classify", "runs/none", "--batch_size", "many"],
            "hf-spam classify: error: argument --batch_size/--batch-size: invalid int value: 'many'",
        ),
        (["cache", "prune", "--keep", "-1"], "hf-spam cache: error: --keep -1: give how many keys to keep, 0 or more."),
        (["demo"], "hf-spam demo: error: the following arguments are required: model"),
        (["benchmark"], "hf-spam benchmark: error: --data_file is needed (the SMS Spam Collection)"),
    ],
)
def test_a_users_mistake_is_one_line_and_exit_2(argv, message):
    result = run_cli(*argv)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]  # train also logs what it is doing
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr, result.stderr
    assert argv[0] == "train" or result.stderr == errors[0] + "\n", result.stderr


@pytest.mark.slow  # three interpreters: the environment is the point (read once, at import)
@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        pytest.param([], {}, "Offline, pass a local copy: --data_file path/to/SMSSpamCollection (or the UCI zip).", id="no-data"),
        pytest.param(["--data_file", "SMS"], {}, "Or train from random weights: --weights random.", id="no-weights"),
        pytest.param(
            ["--data_file", "SMS", "--weights", "random"],
            {"TIKTOKEN_CACHE_DIR": "EMPTY"},
            "Offline, point TIKTOKEN_CACHE_DIR (now ",
            id="no-bpe",
        ),
    ],
)
def test_the_readmes_first_command_offline_names_the_option_to_pass(extra, env, message, sms_file, tmp_path):
    """README's ``hf-spam train --output_dir runs/spam`` without a network: the UCI data, then OpenAI's weights, then
    GPT-2's BPE files cannot be had; each is one line naming the command-line option (not the Python argument)."""
    (tmp_path / "empty").mkdir()
    argv = [str(sms_file) if arg == "SMS" else arg for arg in extra]
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    environment.update({k: str(tmp_path / "empty") for k, v in env.items()}, HF_SPAM_GPT2_BPE_URL="http://127.0.0.1:9/")
    result = subprocess.run(
        [sys.executable, "-m", "hf_spam.cli", "train", "--output_dir", str(tmp_path / "run"), *argv],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and message in errors[0] and "data_file=" not in errors[0], errors


def test_classify_prints_its_answers_and_nothing_on_stderr(gpt2_bpe, tmp_path):
    """On success ``hf-spam classify`` writes one line per text to stdout and nothing to stderr (no loading bars)."""
    torch.manual_seed(0)
    save_with_tokenizer(GPTForSequenceClassification(tiny_config(num_labels=2, id2label={0: "ham", 1: "spam"})), tmp_path / "model")
    result = run_script("classify", str(tmp_path / "model"), *TEXTS)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert [line.split("\t")[-1] for line in result.stdout.splitlines()] == TEXTS


def test_options_written_with_hyphens_are_the_same_options(tmp_path):
    result = run_script("cache", "list", "--prefix-cache-dir", str(tmp_path), "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == {"root": str(tmp_path), "keys": []}
    _, _, args = parse("--output-dir", str(tmp_path), "--prefix-cache-dir", str(tmp_path / "c"))
    assert args.output_dir == str(tmp_path) and args.prefix_cache_dir == str(tmp_path / "c")


def test_a_folder_saved_before_the_sub_package_layout_loads_and_computes_the_same():
    """Written by hf_spam's flat layout (``configuration_gpt.py`` etc. next to the weights, ``auto_map`` naming
    the modules): the Auto class and the class itself load it, its checksums hold, and its logits are the ones
    that layout computed."""
    folder = FIXTURES / "saved_before_layout"
    expected = json.loads((FIXTURES / "saved_before_layout.expected.json").read_text())
    inputs = {key: torch.tensor(expected[key]) for key in ("input_ids", "attention_mask")}
    for model in (AutoModelForSequenceClassification.from_pretrained(folder), GPTForSequenceClassification.from_pretrained(folder)):
        assert type(model) is GPTForSequenceClassification and model.config.truncation_length == 12
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(**inputs).logits, torch.tensor(expected["logits"]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_plain_install_in_a_fresh_environment_gives_a_working_command(tmp_path, gpt2_bpe):
    """``pip install .`` (a wheel, not editable) into a new virtual environment: ``hf-spam --help`` and ``hf-spam
    classify`` on a saved folder work from outside the clone, with the installed package's files (the model code a
    save copies, the local metrics)."""
    environment, source = tmp_path / "venv", tmp_path / "source"
    # torch & co. (and pip, setuptools) from this interpreter; hf_spam from the wheel, built from a copy of the
    # sources so that no earlier build's leftovers can slip into it
    venv.create(environment, system_site_packages=True, with_pip=False)
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "runs", ".*_cache"))
    python = environment / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)]
    subprocess.run(install, check=True, capture_output=True, timeout=600, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    command = environment / "bin" / "hf-spam"
    where = subprocess.run(
        [str(python), "-c", "import hf_spam, pathlib; print(pathlib.Path(hf_spam.__file__).parent)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    installed = Path(where.stdout.strip())
    assert installed.is_relative_to(environment), where
    assert (installed / "training" / "metrics" / "multi_label" / "multi_label.py").is_file()

    help_text = subprocess.run([str(command), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and all(f"  {name} " in help_text.stdout for name in COMMANDS), help_text

    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(id2label={0: "ham", 1: "spam"})).eval()
    save_with_tokenizer(model, tmp_path / "model")
    answer = subprocess.run(
        [str(command), "classify", str(tmp_path / "model"), "--jsonl", *TEXTS], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert answer.returncode == 0, answer.stderr
    expected = classify(load_classifier(str(tmp_path / "model")), TEXTS)
    got = [json.loads(line) for line in answer.stdout.splitlines()]
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], rel=1e-5)


def test_version_and_options_that_do_not_exist(capsys, caplog):
    """`hf-spam --version`; a misspelled option is named with the nearest one (train's HfArgumentParser and the other
    commands' argparse alike), and a prefix of an option is not taken for it (a typo must not become another option)."""
    with pytest.raises(SystemExit) as exited:
        cli_main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"hf-spam {version('hf_spam')}\n"
    for argv in (["train", "--data_fiel", "x"], ["train", "--data_fil", "x"]):
        caplog.clear()
        with pytest.raises(SystemExit) as exited:
            cli_main([*argv, "--output_dir", "runs/none"])
        assert exited.value.code == 2 and f"{argv[1]} is not an option; did you mean --data_file?" in caplog.text, argv
    with pytest.raises(SystemExit) as exited:
        cli_main(["classify", "runs/none", "--batch_siz", "3"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == "hf-spam classify: error: --batch_siz is not an option; did you mean --batch_size?\n"


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_command_quietly(gpt2_bpe, tmp_path):
    """`hf-spam classify RUN --file big.txt | head -1`: the closed pipe was a BrokenPipeError traceback; now exit 0,
    nothing on stderr, as `cat` does. (A real process and pipe: the process is the point.)"""
    torch.manual_seed(0)
    save_with_tokenizer(GPTForSequenceClassification(tiny_config(id2label={0: "ham", 1: "spam"})), tmp_path / "model")
    (tmp_path / "big.txt").write_text("".join(f"message number {i}, long enough to fill the pipe's buffer\n" for i in range(6000)))
    command = [sys.executable, "-m", "hf_spam.cli", "classify", str(tmp_path / "model"), "--file", str(tmp_path / "big.txt")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().endswith("message number 0, long enough to fill the pipe's buffer\n")
    process.stdout.close()  # as head does after its line
    assert process.wait(timeout=300) == 0
    assert process.stderr.read() == ""


def test_options_that_would_be_ignored_or_fail_deep_are_one_line(gpt2_bpe, sms_file, tmp_path, caplog):
    """Red team v3, each silent or a traceback before: --threshold on a single-label model (ignored), --device bogus
    (RuntimeError) or cuda on a machine without it (AssertionError), --label_names on the SMS data (ignored)."""
    torch.manual_seed(0)
    save_with_tokenizer(GPTForSequenceClassification(tiny_config(id2label={0: "ham", 1: "spam"})), tmp_path / "model")
    cases = [
        (["--threshold", "0.3"], "--threshold 0.3: "),
        (["--device", "bogus"], "--device bogus: not a device"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "--device cuda: this machine has no CUDA GPU"))
    for options, message in cases:
        caplog.clear()
        with pytest.raises(SystemExit) as exited:
            cli_main(["classify", str(tmp_path / "model"), *options, "a text"])
        problems = [record for record in caplog.records if record.levelno >= logging.WARNING]
        assert exited.value.code == 2 and message in caplog.text and len(problems) == 1, options
    with pytest.raises(DataError, match="--label_names describe your own data"):
        run(*parse("--data_file", str(sms_file), "--label_names", "spam", "ham", "--output_dir", str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_a_random_full_size_model_says_what_it_costs_before_training(caplog):
    with caplog.at_level(logging.WARNING):
        build_model("gpt2-small", {0: "ham", 1: "spam"}, seed=123, weights="random")
    assert "--weights random without --config_overrides builds the full gpt2-small shape (124,441,346 parameters)" in caplog.text


def test_texts_in_utf16_or_with_nul_bytes_are_refused_naming_the_file(tmp_path):
    """A UTF-16 file was classified as three NUL-filled texts; a UTF-8 byte-order mark is not part of the first text."""
    (tmp_path / "utf16.txt").write_bytes("hello\nworld\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"utf16.txt is UTF-16 text .* iconv -f UTF-16 -t UTF-8"):
        read_text_file(tmp_path / "utf16.txt")
    (tmp_path / "nul.txt").write_bytes(b"fine\nbro\x00ken\n")
    with pytest.raises(DataError, match="nul.txt: line 2 holds a NUL byte"):
        read_text_file(tmp_path / "nul.txt")
    (tmp_path / "bom.txt").write_bytes(codecs.BOM_UTF8 + b"hello\nworld\n")
    assert read_text_file(tmp_path / "bom.txt") == ["hello", "world"]


def test_an_options_file_is_checked_as_the_command_line_is(tmp_path, capsys, caplog):
    """`hf-spam train recipe.yaml`: the file stands for the command line it spells (same dataclasses, list options split
    as a shell splits them), and each mistake is one line naming the file: an unknown key with the nearest option, a
    wrong type, an invalid choice, a list instead of options, invalid JSON, a missing file."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("output_dir: runs/x\nweights: random\nlabel_names: ham spam\nlearning_rate: 5.0e-4\nbf16: false\nseed: null\n")
    argv = ["--output_dir", "runs/x", "--weights", "random", "--label_names", "ham", "spam", "--learning_rate", "5e-4"]
    assert parse_command_line(train_parser(), [str(recipe)]) == parse_command_line(train_parser(), argv)
    (tmp_path / "recipe.json").write_text(json.dumps({"output_dir": "runs/x", "label_names": ["ham", "spam"], "weights": "random"}))
    assert parse_command_line(train_parser(), [str(tmp_path / "recipe.json")])[1].label_names == ["ham", "spam"]
    cases = {
        "data_fiel: x\n": f"{tmp_path / 'c.yaml'}: --data_fiel is not an option; did you mean --data_file?",
        'max_steps: "ten"\n': f"hf-spam train {tmp_path / 'c.yaml'}: error: argument --max_steps/--max-steps: invalid int value: 'ten'",
        "weights: randomm\n": "error: argument --weights: invalid choice: 'randomm'",
        "- a\n- b\n": f"{tmp_path / 'c.yaml'} holds a list, not options",
        "a: [1\n": f"{tmp_path / 'c.yaml'} is not valid YAML",
    }
    for text, message in cases.items():
        (tmp_path / "c.yaml").write_text(text)
        caplog.clear()
        with pytest.raises(SystemExit) as exited:
            cli_main(["train", str(tmp_path / "c.yaml")])
        assert exited.value.code == 2 and message in caplog.text + capsys.readouterr().err, text
    for name, message in (("c.json", "is not valid JSON"), ("missing.yaml", "missing.yaml: cannot be read")):
        (tmp_path / "c.json").write_text('{"a": ')
        with pytest.raises(OptionError, match=message):
            parse_command_line(train_parser(), [str(tmp_path / name)])


def test_train_is_quiet_unless_verbose():
    """``hf-spam train`` leaves transformers at WARNING with its and datasets' bars off and Trainer's logs as one line per
    epoch (``TrainingProgress``); ``-v`` brings back transformers' INFO lines, the bars and every log (hf_spam at DEBUG)."""
    import datasets
    import transformers

    from hf_spam.cli.train import quiet

    quiet(verbose=False)
    assert transformers.utils.logging.get_verbosity() == logging.WARNING and not datasets.is_progress_bar_enabled()
    assert not transformers.utils.logging.is_progress_bar_enabled() and not logging.getLogger("hf_spam.training").isEnabledFor(
        logging.DEBUG
    )
    quiet(verbose=True)
    assert transformers.utils.logging.get_verbosity() == logging.INFO and datasets.is_progress_bar_enabled()
    assert transformers.utils.logging.is_progress_bar_enabled() and logging.getLogger("hf_spam.training").isEnabledFor(logging.DEBUG)
    assert "-v, --verbose" in train_parser().format_help()


@pytest.mark.slow
def test_a_mistake_under_accelerate_launch_is_one_line_and_the_launchers_summary_names_it(tmp_path):
    """Red team v3: ``accelerate launch -m hf_spam.cli train`` with a user error ended in a torch-elastic traceback whose
    root cause said only "To enable traceback see" torch's documentation. The processes now leave the launcher the error
    file torch's ``@record`` would (its one line where a traceback would be), so ``accelerate launch -q`` prints the mistake
    once from process 0 and a summary whose root cause is that line: no traceback, nothing written, a failing status."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "-q", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hf_spam.cli", "train"]
    argv = ["--output_dir", str(tmp_path / "run"), "--pooling", "last", "--padding", "dynamic"]
    result = subprocess.run([*launch, *argv], capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("ERROR hf_spam") or " ERROR hf_spam: " in line]
    assert len(said) == 1 and "--pooling last reads pad positions" in said[0], result.stderr[-3000:]
    root_cause = result.stderr.split("Root Cause (first observed failure):", 1)[1]
    assert re.search(r"traceback : --pooling last reads pad positions.*--padding longest_train", root_cause), root_cause
    assert not (tmp_path / "run").exists()


def test_a_mistake_under_a_launcher_is_said_once(monkeypatch, tmp_path):
    """Red team v3: ``accelerate launch -m hf_spam.cli train`` with a user error printed it from every process. Every
    process exits with the mistake's status; process 0 alone says it (launchers set ``RANK``)."""
    said = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        result = run_cli("train", "--output_dir", str(tmp_path / "run"), "--pooling", "last", "--padding", "dynamic")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        said[rank] = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(said["0"]) == 1 and "--pooling last" in said["0"][0] and said["1"] == []
