"""Finetuning through Trainer: the chapter's recipe end to end, its optimizer details, LoRA, DDP, the Hub push."""

import json
import logging
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score
from transformers import AutoModelForSequenceClassification, HfArgumentParser, TrainerCallback

from hf_spam import GPTForSequenceClassification
from hf_spam.cache.rows import CachedPrefix
from hf_spam.errors import OptionError
from hf_spam.models.gpt import SHIPPED_FILES
from hf_spam.training.config import SpamTrainingArguments
from hf_spam.training.evaluation import load_metric
from hf_spam.training.model_setup import configure_trainable
from hf_spam.training.recipe import pooling_for, run
from hf_spam.training.trainer import SpamTrainer
from tests.helpers import ROOT, TINY, parse, right_padded, run_script, tiny_config


def test_defaults_are_the_books_recipe():
    model_args, data_args, args = parse("--output_dir", "x")
    assert (model_args.model_name_or_path, model_args.weights, model_args.trainable_layers) == ("gpt2-small", "pretrained", "last_block")
    assert (args.learning_rate, args.weight_decay, args.num_train_epochs, args.per_device_train_batch_size, args.seed) == (
        5e-5,
        0.1,
        5,
        8,
        123,
    )
    assert args.lr_scheduler_type == "constant" and args.max_grad_norm == 0 and args.train_drop_last
    assert data_args.padding == "dynamic" and args.train_sampling_strategy == "random" and args.prefix_cache


FREED_MEMORY_PROBE = """
import ctypes, resource, sys, torch
from hf_spam.training.allocator import reuse_freed_memory
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: every fault is one 4 KiB page, whatever the kernel's THP setting
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
def block():  # a block's activations: allocated, then freed together
    live = [torch.ones(25 << 18) for _ in range(4)]  # 4 x 25 MiB
    del live
block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="reuse_freed_memory acts on glibc's allocator only")
@pytest.mark.slow
def test_reuse_freed_memory_keeps_freed_memory_in_the_process():
    """With ``reuse_freed_memory()`` (what hf-spam train does under its default --reuse_freed_memory)
    freed activations stay in the process: the next batch does not fault the same 100 MiB in again page by page,
    as it does with glibc's defaults."""

    def faults_per_block(mode: str) -> float:
        command = [sys.executable, "-c", FREED_MEMORY_PROBE, mode]
        return float(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()[-1])

    default, glibc_defaults = faults_per_block("reuse"), faults_per_block("glibc")
    # a block touches 100 MiB, 25,600 pages: kept memory faults at most an eighth of them in again. How many glibc's
    # defaults fault depends on where its dynamic thresholds and the heap's layout stand (BENCHMARKS.md); that the
    # probe sees those faults at all shows it counts them.
    assert default < 25_600 / 8 and glibc_defaults > 1_000, (default, glibc_defaults)


def test_training_arguments_raise_on_contradictions_instead_of_changing_the_plan(tmp_path, caplog):
    """Keeping the best epoch without a checkpoint of every evaluated epoch, or a best metric of no split, is an
    error naming the options; --label_names names classes (DataArguments), never Trainer's label keys; the one
    adjustment, use_cpu without an accelerator, is logged once."""
    from hf_spam.errors import OptionError

    with pytest.raises(OptionError, match="--load_best_model_at_end false"):
        parse("--output_dir", str(tmp_path), "--save_strategy", "no")
    with pytest.raises(OptionError, match="validation_accuracy"):
        parse("--output_dir", str(tmp_path), "--metric_for_best_model", "accuracy")
    model_args, data_args, args = parse(
        "--output_dir", str(tmp_path), "--label_names", "ham", "spam", "--save_strategy", "no", "--load_best_model_at_end", "false"
    )
    assert data_args.label_names == ["ham", "spam"] and args.label_names is None
    assert (args.save_strategy, args.load_best_model_at_end, args.metric_for_best_model) == ("no", False, "validation_accuracy")
    if not torch.cuda.is_available():
        from hf_spam.training import config as spam_config

        spam_config._say_cpu_once.cache_clear()
        with caplog.at_level(logging.INFO, logger="hf_spam.training.config"):
            assert parse("--output_dir", str(tmp_path))[2].use_cpu and parse("--output_dir", str(tmp_path))[2].use_cpu
        assert sum("use_cpu=True" in record.getMessage() for record in caplog.records) == 1


def test_weight_decay_reaches_the_same_parameters_as_the_books_adamw(tmp_path):
    model = configure_trainable(GPTForSequenceClassification(tiny_config()), "last_block")
    decayed = {}
    for scope in ("book", "transformers"):
        (args,) = HfArgumentParser(SpamTrainingArguments).parse_args_into_dataclasses(
            args=["--output_dir", str(tmp_path), "--weight_decay_scope", scope, "--eval_strategy", "no", "--save_strategy", "no"]
        )
        optimizer = SpamTrainer(model=model, args=args).create_optimizer()
        names = {id(p): n for n, p in model.named_parameters()}
        decayed[scope] = {names[id(p)] for group in optimizer.param_groups if group["weight_decay"] == 0.1 for p in group["params"]}
    # the book: AdamW(model.parameters(), weight_decay=0.1) -> every parameter that gets a gradient is decayed
    assert decayed["book"] == {n for n, p in model.named_parameters() if p.requires_grad}
    assert "model.trf_blocks.1.norm1.scale" in decayed["book"] and "out_head.bias" in decayed["book"]
    # transformers' name rules with the book's names: biases and final_norm are spared, norm1/norm2 are not
    assert "out_head.bias" not in decayed["transformers"] and "model.final_norm.scale" not in decayed["transformers"]
    assert "model.trf_blocks.1.norm1.scale" in decayed["transformers"]


@pytest.mark.parametrize(
    ("choice", "prefixes"),
    [
        ("last_layer", ("out_head.",)),
        ("last_block", ("out_head.", "model.trf_blocks.1.", "model.final_norm.")),
        ("last_two_blocks", ("out_head.", "model.trf_blocks.0.", "model.trf_blocks.1.", "model.final_norm.")),
    ],
)
def test_trainable_layers_freeze_like_chapter_6(choice, prefixes):
    model = configure_trainable(GPTForSequenceClassification(tiny_config()), choice)
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(prefixes), name


def test_metric_module_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    references, predictions = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    ours = load_metric().compute(predictions=predictions, references=references)
    assert ours["accuracy"] == pytest.approx(np.mean(references == predictions))
    assert ours["precision"] == pytest.approx(precision_score(references, predictions))
    assert ours["recall"] == pytest.approx(recall_score(references, predictions))
    assert ours["f1"] == pytest.approx(f1_score(references, predictions))
    assert ours["confusion_matrix"] == confusion_matrix(references, predictions).tolist()
    references, predictions = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    ours = load_metric().compute(predictions=predictions, references=references, num_labels=3)
    assert ours["f1"] == pytest.approx(f1_score(references, predictions, average="macro"))


@pytest.mark.slow
def test_a_whole_run_saves_what_a_user_keeps_and_classifies(tmp_path, sms_file):
    """A whole run of hf-spam train (every step of an epoch, every evaluation, the plots and the card) on a 1-block
    model: what its folder holds and reports, and what it prints. The README's quick start (tested as a documentation
    block) checks the accuracy a 2-block model reaches in 5 epochs."""
    out = tmp_path / "out"
    result = run_script("train.py", "--data_file", str(sms_file), *TINY, "--num_train_epochs", "1", "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    # what the run does, not transformers' INFO lines (each evaluation's size, each file saved) nor a bar per
    # evaluation nested in the training bar: those were most of what a run printed
    printed = result.stdout + result.stderr
    assert "[transformers]" not in printed and "Running Evaluation" not in printed and "Configuration saved" not in printed
    assert "/19 [" not in printed and "/131 [" not in printed, "a bar over the validation (19) or training-split (131) batches"
    # one line for the epoch's evaluations, no Trainer log dicts (the losses are in the plots), no data preparation bars
    assert re.search(r"epoch 1: validation_loss [\d.]+, validation_accuracy [\d.]+, train_loss [\d.]+, train_accuracy", printed)
    assert "{'loss'" not in printed and "{'eval_" not in printed and "Tokenizing" not in printed
    assert "***** final metrics *****" in printed and "Removed " in printed
    metrics = json.loads((out / "all_results.json").read_text())
    # the output folder holds what a user keeps or shares, nothing test-only and no leftover checkpoints
    assert {p.name for p in out.iterdir()} == {
        *("README.md", "all_results.json", "config.json", "model.safetensors", "training_args.bin"),
        *SHIPPED_FILES,
        "model_checksums.json",
        *("tokenizer.json", "tokenizer_config.json"),
        *("loss.png", "loss.pdf", "accuracy.png", "accuracy.pdf"),
    }
    assert {"train_accuracy", "eval_accuracy", "test_accuracy", "test_precision", "test_recall", "test_f1", "initial_eval_accuracy"} <= set(
        metrics
    )
    # the training run's throughput (1 epoch of 130 batches of 8), not the evaluation's
    assert metrics["train_samples_per_second"] * metrics["train_runtime"] == pytest.approx(1040, rel=0.01)
    for name in (
        "loss.png",
        "loss.pdf",
        "accuracy.png",
        "accuracy.pdf",
        "README.md",
        "modeling_gpt.py",
        "tokenizer.json",
        "model.safetensors",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "ham", "1": "spam"}
    card = (out / "README.md").read_text()
    assert f"{metrics['test_accuracy'] * 100:.2f} %" in card

    answer = run_script(
        "classify", str(out), "--jsonl", "You are a winner you have been specially selected to receive $1000 cash or a $2000 award."
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    reply = json.loads(answer.stdout.strip().splitlines()[-1])
    assert reply["label"] in ("ham", "spam") and abs(sum(reply["scores"].values()) - 1) < 1e-5


@pytest.mark.slow
def test_same_seed_same_metrics_and_weights(tmp_path, sms_file):
    results = []
    for name in ("a", "b"):
        results.append(
            run(
                *parse(
                    "--data_file",
                    str(sms_file),
                    *TINY,
                    "--max_steps",
                    "12",
                    "--initial_eval_batches",
                    "1",
                    "--output_dir",
                    str(tmp_path / name),
                )
            )
        )
    timing = ("runtime", "per_second", "preparation_time")
    results = [{k: v for k, v in r.items() if not k.endswith(timing)} for r in results]
    assert results[0] == results[1] and "test_accuracy" in results[0]
    weights = [load_file(tmp_path / name / "model.safetensors") for name in ("a", "b")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_lora_run_saves_a_merged_plain_model(tmp_path, sms_file):
    argv = [
        "--data_file",
        str(sms_file),
        "--weights",
        "random",
        "--config_overrides",
        "n_layers=1,emb_dim=64,n_heads=2",
        "--trainable_layers",
        "lora",
    ]
    run(*parse(*argv, "--lora_rank", "4", "--max_steps", "4", "--initial_eval_batches", "0", "--output_dir", str(tmp_path)))
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert not any("lora" in k or "base_layer" in k or "modules_to_save" in k for k in keys)
    assert (
        type(AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)).__name__
        == "GPTForSequenceClassification"
    )


@pytest.mark.slow
def test_two_processes_split_the_data_and_the_cache_and_fsdp_on_cpu_is_said_to_be_ddp(tmp_path, sms_file):
    """One 2-process job (gloo, ``accelerate launch --use_fsdp``, as a user asks for FSDP) checks what several processes
    change: DDP's data split (the processes train on different examples); the prefix cache's sharding (each example
    computed once in all, and the rows those of a single process); accelerate's FSDP, which shards only on accelerators,
    trains with DDP on CPU (whole parameters in every process) and the run says so; the saved model loads."""
    out, record = tmp_path / "run", tmp_path / "record"
    record.mkdir()
    common = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2"]
    common += ["--max_steps", "3", "--initial_eval_batches", "0"]
    fsdp = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP"]
    fsdp += ["--fsdp_transformer_layer_cls_to_wrap", "TransformerBlock", "--fsdp_state_dict_type", "FULL_STATE_DICT"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", *fsdp, "tests/support/train_probe.py"]
    command += ["--probe_record", str(record), "--probe_sharding", str(record), *common, "--prefix_cache_dir", str(tmp_path / "two")]
    result = subprocess.run(
        [*command, "--output_dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]

    seen = [json.loads((record / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 3 * 8
    assert not set(seen[0]) & set(seen[1]), "both processes trained on the same examples"
    assert "FSDP was asked for, but accelerate shards only on accelerators (GPUs): on cpu it trains with DDP" in result.stderr
    held = [json.loads((record / f"rank{rank}-sharding.json").read_text()) for rank in (0, 1)]
    assert all(entry["local"] == entry["full"] for entries in held for entry in entries.values())
    assert AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).config.id2label == {0: "ham", 1: "spam"}
    assert not list(out.glob("*rank*")), "the product writes no test files into the output folder"

    run(*parse(*common, "--prefix_cache_dir", str(tmp_path / "one"), "--output_dir", str(tmp_path / "single")))
    two, one = (sorted((tmp_path / name).glob("[!.]*")) for name in ("two", "one"))  # .locks/ aside
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


def test_classify_pipeline_and_forward_agree_for_every_pooling(gpt2_bpe, tmp_path):
    """A saved model predicts the same through classify.py's path, a stock pipeline (no extra arguments)
    and a plain forward with the tokenizer's padding, also for the book's position -1 on padded input."""
    from transformers import AutoTokenizer, pipeline

    from hf_spam import save_with_tokenizer
    from hf_spam.serving.classifier import classify, load_classifier

    torch.manual_seed(0)
    texts = ["Free entry in 2 a wkly comp", "Ok lar", "<|endoftext|>", "Sorry, I'll call later " * 3]
    for pooling in ("last_non_pad", "last"):
        model = GPTForSequenceClassification(tiny_config(pooling=pooling, id2label={0: "ham", 1: "spam"}, padded_length=24))
        save_with_tokenizer(model, tmp_path / pooling)
        ours = classify(load_classifier(tmp_path / pooling), texts, batch_size=2)
        reference = pipeline("text-classification", model=str(tmp_path / pooling), trust_remote_code=True, top_k=None)
        for mine, theirs in zip(ours, reference(texts, batch_size=3), strict=True):
            for entry in theirs:
                assert mine["scores"][entry["label"]] == pytest.approx(entry["score"], abs=1e-5)
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / pooling)
        loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / pooling, trust_remote_code=True)
        with torch.no_grad():
            forward = loaded(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
        expected = torch.tensor([[m["scores"]["ham"], m["scores"]["spam"]] for m in ours])
        torch.testing.assert_close(forward, expected, atol=1e-5, rtol=0)
        empty = classify(load_classifier(tmp_path / pooling), [""])[0]["scores"]  # read as <|endoftext|>
        assert empty == pytest.approx(ours[2]["scores"], abs=1e-6)
    # the book's model reads position -1 of the input padded to the training length: a pad token, as in training
    book = GPTForSequenceClassification(tiny_config(pooling="last", padded_length=24))
    ids = torch.tensor([[15496, 11, 995]])
    padded = torch.cat([ids, torch.full((1, 21), 50256)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(book(ids).logits, book.out_head(book.model(padded).last_hidden_state[:, -1]), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="no tokens"):
        model(torch.zeros(1, 0, dtype=torch.long))


def test_a_training_split_smaller_than_one_batch_is_an_error_before_training(gpt2_bpe, tmp_path):
    from hf_spam.errors import DataError

    rows = ["text,label"] + [f"message {i},{i % 2}" for i in range(7)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "other.csv").write_text("text,label\nhello,0\nworld,1\n")
    argv = [
        "--train_file",
        str(tmp_path / "train.csv"),
        "--validation_file",
        str(tmp_path / "other.csv"),
        "--test_file",
        str(tmp_path / "other.csv"),
    ]
    argv += [*TINY, "--max_steps", "3"]
    with pytest.raises(DataError, match=r"The training split \(user: train.csv\) has 7 rows; one batch needs 8 .*--train_drop_last false"):
        run(*parse(*argv, "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "out")))
    assert not (tmp_path / "out").exists(), "nothing trained, nothing saved"


def test_texts_shared_across_splits_are_a_visible_warning(caplog):
    from datasets import Dataset, DatasetDict

    from hf_spam.training.recipe import warn_cross_split_duplicates

    split = lambda texts: Dataset.from_dict({"text": texts, "label": [0] * len(texts)})  # noqa: E731
    splits = DatasetDict(train=split(["a", "b", "c", "c"]), validation=split(["a", "x"]), test=split(["b", "c", "c", "y"]))
    with caplog.at_level(logging.WARNING):
        warn_cross_split_duplicates(splits)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "Texts also in the training split: validation 1, test 2. They are kept, as the book keeps them" in caplog.text


@pytest.mark.slow
def test_early_stopping_acts_without_saying_it_is_disabled(tmp_path, sms_file, caplog):
    """With early stopping on, the training split's and the final evaluations lack the validation metric;
    transformers' callback would log on each that early stopping is disabled. It is not: it stops the run."""
    import transformers

    argv = ["--data_file", str(sms_file), *TINY, "--learning_rate", "0", "--num_train_epochs", "4", "--train_eval_batches", "2"]
    argv += ["--early_stopping_patience", "1", "--initial_eval_batches", "0", "--output_dir", str(tmp_path)]
    recorder = TrainerStates()
    transformers.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            run(*parse(*argv), callbacks=[recorder])
    finally:
        transformers.logging.disable_propagation()
    assert "early stopping" not in caplog.text.lower(), caplog.text
    epochs = [e["epoch"] for e in recorder.state.log_history if "eval_validation_accuracy" in e]
    assert epochs == [1.0, 2.0], "learning rate 0: no improvement after epoch 1, so patience 1 stops after epoch 2"


class TrainerStates(TrainerCallback):
    def on_train_end(self, args, state, control, **kwargs):
        self.state = state


FSDP_PROBE = """
import sys, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from hf_spam import GPTForSequenceClassification
from tests.helpers import tiny_config
dist.init_process_group("gloo")
rank, out = dist.get_rank(), sys.argv[1]
def build():
    torch.manual_seed(0)
    return GPTForSequenceClassification(tiny_config(vocab_size=1000, n_layers=2, num_labels=3))
ids, labels = torch.randint(0, 1000, (4, 9), generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2, 1, 2])
model = build()
for block in model.model.trf_blocks:  # each TransformerBlock (_no_split_modules) its own unit, as accelerate wraps them
    fully_shard(block)
fully_shard(model)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
for _ in range(2):  # each process trains on its half of the batch
    model(ids[2 * rank : 2 * rank + 2], labels=labels[2 * rank : 2 * rank + 2]).loss.backward()
    optimizer.step(); optimizer.zero_grad()
sharded = {n: p.to_local().numel() for n, p in model.named_parameters()}
full = {n: p.full_tensor() for n, p in model.named_parameters()}
if rank == 0:
    reference = build()  # one process, the whole batch
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0.9)
    for _ in range(2):
        reference(ids, labels=labels).loss.backward()
        optimizer.step(); optimizer.zero_grad()
    diff = max((full[n] - p).abs().max().item() for n, p in reference.named_parameters())
    held = sum(sharded.values()) / sum(p.numel() for p in reference.parameters())
    open(out, "w").write(f"{diff} {held}")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_fsdp2_on_two_gloo_processes_trains_like_one_process(tmp_path):
    """torch's FSDP2 (``fully_shard`` per TransformerBlock) on 2 CPU processes: each holds about half of the
    parameters, and two SGD steps on half a batch each give the weights of one process on the whole batch."""
    (tmp_path / "probe.py").write_text(FSDP_PROBE)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(tmp_path / "probe.py"), str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    diff, held = map(float, (tmp_path / "out").read_text().split())
    assert diff < 1e-5 and 0.45 < held < 0.55, (diff, held)


@pytest.mark.slow
def test_activation_checkpointing_flag_trains_the_same_model(tmp_path, sms_file):
    """``--activation_checkpointing true`` (Trainer's flag; ``--gradient_checkpointing`` is its deprecated alias)
    recomputes the blocks in the backward pass: the same losses, metrics and weights as without, on the cached prefix
    with the one-position top block."""

    class Checkpointing(TrainerCallback):
        seen: list[bool] = []

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.seen.append(model.is_activation_checkpointing)

    results = []
    for flag in ("false", "true"):
        argv = ["--data_file", str(sms_file), *TINY, "--max_steps", "6", "--initial_eval_batches", "0", "--activation_checkpointing", flag]
        results.append(run(*parse(*argv, "--output_dir", str(tmp_path / flag)), callbacks=[Checkpointing()]))
    assert Checkpointing.seen == [False, True]
    timing = ("runtime", "per_second", "preparation_time")
    plain, checkpointed = ({k: v for k, v in r.items() if not k.endswith(timing)} for r in results)
    assert checkpointed.keys() == plain.keys()
    for key, value in plain.items():
        if isinstance(value, float):
            assert checkpointed[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
        else:
            assert checkpointed[key] == value, key
    weights = [load_file(tmp_path / flag / "model.safetensors") for flag in ("false", "true")]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_spam_trainer_used_alone_trains_on_the_prepared_cache_and_reports_what_the_model_predicts(sms_file, tmp_path):
    """docs/training.md's library example: SpamTrainer given the cached prefixes of ``hf_spam.cache.prepare`` trains on
    them (and records them), evaluates the
    validation and training splits, and its final test figures are those of the trained model itself, run on the
    token ids without any cache (an independent reading of the same weights)."""
    from hf_spam.cache import prepare
    from hf_spam.cache.rows import CachedPrefix
    from hf_spam.data import load_sms_spam, tokenize
    from hf_spam.training.model_setup import build_model

    data = tokenize(load_sms_spam(sms_file), "dynamic", context_length=32)
    model = build_model(
        "gpt2-small",
        {0: "ham", 1: "spam"},
        seed=123,
        weights="random",
        config_overrides="n_layers=2,emb_dim=64,n_heads=2,context_length=32",
    )
    model = configure_trainable(model, "last_block")
    args = SpamTrainingArguments(
        output_dir=str(tmp_path / "lib"), max_steps=20, learning_rate=1e-3, prefix_cache_dir=str(tmp_path / "cache"), report_to=[]
    )
    splits, collator = prepare(model, data.splits, args.prefix_cache_options())
    trainer = SpamTrainer(model, args, collator, splits["train"], splits["validation"], test_dataset=splits["test"])
    assert isinstance(trainer.train_dataset, CachedPrefix) and set(trainer.eval_dataset) == {"validation", "train"}
    assert trainer.run_metrics["prefix_cache_train_built"] and trainer.run_metrics["prefix_cache_test_bytes"] > 0
    initial = trainer.evaluate_initial()
    assert {"initial_train_accuracy", "initial_eval_accuracy", "initial_test_accuracy"} <= set(initial)
    final = trainer.evaluate_final(trainer.train())
    trainer.save_run()

    test = data.splits["test"]
    model.eval()
    with torch.no_grad():
        predicted = [
            model(
                **{k: v for k, v in data.collator([test[i] for i in range(start, min(start + 16, len(test)))]).items() if k != "labels"}
            ).logits.argmax(-1)
            for start in range(0, len(test), 16)
        ]
    labels = np.array(test["label"])
    assert final["test_accuracy"] == pytest.approx(float((torch.cat(predicted).numpy() == labels).mean()))
    assert final["test_confusion_matrix"] == confusion_matrix(labels, torch.cat(predicted).numpy()).tolist()
    saved = json.loads((tmp_path / "lib" / "all_results.json").read_text())
    assert saved["test_accuracy"] == final["test_accuracy"] and saved["prefix_cache_train_built"] is True
    assert (tmp_path / "lib" / "model.safetensors").is_file() and (tmp_path / "lib" / "accuracy.png").is_file()
    # the folder carries its tokenizer though none was given: hf-spam classify, pipeline and the demo load it
    from hf_spam import classify, load_classifier

    texts = list(load_sms_spam(sms_file)["test"]["text"][:16])
    labels_of_folder = [result["label"] for result in classify(load_classifier(tmp_path / "lib"), texts)]
    ids = [data.collator([test[i]]) for i in range(16)]
    with torch.no_grad():
        labels_of_model = [model.config.id2label[int(model(input_ids=batch["input_ids"]).logits.argmax())] for batch in ids]
    assert labels_of_folder == labels_of_model


def test_poolings_that_read_pads_need_pads_that_do_not_depend_on_the_batch(tmp_path):
    """Red team v3: `--pooling last`/`mean_all` under `--padding dynamic` reported 0.82 and saved a model that classified
    0.60, moving with --batch_size. Refused before any data is read; under `--padding none` they read what last_non_pad and
    mean read, which is what a batch of several lengths must see."""
    for pooling in ("last", "mean_all"):
        with pytest.raises(OptionError, match=f"--pooling {pooling} reads pad positions.*--padding longest_train"):
            run(*parse("--pooling", pooling, "--output_dir", str(tmp_path / pooling)))
        assert not (tmp_path / pooling).exists()
    assert (pooling_for("last", "none"), pooling_for("mean_all", "none")) == ("last_non_pad", "mean")
    assert pooling_for("last", "longest_train") == "last" and pooling_for("first", "dynamic") == "first"
    # the equivalence the mapping rests on: each text alone (no pads) under the book's pooling == the batch under the other
    torch.manual_seed(0)
    texts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    for book, unpadded in (("last", "last_non_pad"), ("mean_all", "mean")):
        alone = GPTForSequenceClassification(tiny_config(pooling=book)).eval()
        batched = GPTForSequenceClassification(tiny_config(pooling=unpadded)).eval()
        batched.load_state_dict(alone.state_dict())
        ids, mask = right_padded(texts)
        expected = torch.cat([alone(torch.tensor([t])).logits for t in texts])
        torch.testing.assert_close(batched(ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=0)


def indexed_rows(count: int):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [[i] for i in range(count)], "labels": [i % 2 for i in range(count)]})


def batches_of(loader, epochs: int) -> list[list[int]]:
    """The rows each batch holds, epoch after epoch, as Trainer's loop draws them (it sets the loader's epoch; a
    length-grouped sampler draws from torch's global generator, seeded here as the loop would have left it)."""
    drawn = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        torch.manual_seed(epoch)
        drawn += [batch["input_ids"][:, 0].tolist() for batch in loader]
    return drawn


def test_training_drops_its_last_partial_batch_as_drop_last_does_and_evaluation_scores_every_row(tmp_path):
    """The book's ``drop_last=True`` is on its training loader only. The reference is transformers' own Trainer with
    ``dataloader_drop_last=True``: its training batches, epoch after epoch, are SpamTrainer's, row for row, whatever
    the sampling; its evaluation would lose the last 3 of 19 rows, SpamTrainer's scores all of them. Transformers'
    ``--dataloader_drop_last`` itself is refused, since it cuts evaluation too."""
    from transformers import Trainer, TrainingArguments

    model = GPTForSequenceClassification(tiny_config())
    common = {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "seed": 7, "report_to": [], "use_cpu": True}
    for sampling in ("random", "sequential", "group_by_length"):
        options = {**common, "train_sampling_strategy": sampling}
        ours_args = SpamTrainingArguments(output_dir=str(tmp_path / "a"), **options)
        ours = SpamTrainer(model, ours_args, None, indexed_rows(23), indexed_rows(19))
        reference = Trainer(
            model,
            TrainingArguments(output_dir=str(tmp_path / "b"), dataloader_drop_last=True, **options),
            train_dataset=indexed_rows(23),
            eval_dataset=indexed_rows(19),
        )
        loaders = ours.get_train_dataloader(), reference.get_train_dataloader()  # both seeded by --seed, as in a run
        drawn = batches_of(loaders[0], epochs=3)
        assert drawn == batches_of(loaders[1], epochs=3), sampling
        assert [len(batch) for batch in drawn] == [4] * 15, sampling
        assert sum(len(batch["labels"]) for batch in ours.get_eval_dataloader("validation")) == 19
        assert sum(len(batch["labels"]) for batch in reference.get_eval_dataloader()) == 16
    with pytest.raises(OptionError, match="--dataloader_drop_last would drop evaluation rows too.*--train_drop_last"):
        parse("--output_dir", "x", "--dataloader_drop_last", "true")


def test_the_private_trainer_methods_spam_trainer_relies_on_are_still_there():
    """SpamTrainer overrides three of Trainer's private methods (``_get_grad_norm``: the norm only on logging steps;
    ``_push_from_checkpoint``: a pushed checkpoint carries its manifest; ``_get_train_sampler``: the book's drop_last
    on training alone) and calls two (resuming at the last step). A
    transformers release that renames one, changes its arguments or stops calling it would silently bypass hf_spam's
    version: this fails instead, naming the method."""
    import inspect

    from transformers import Trainer

    expected = {
        "_get_grad_norm": ["self", "model", "grad_norm"],
        "_push_from_checkpoint": ["self", "checkpoint_folder"],
        "_load_from_checkpoint": ["self", "resume_from_checkpoint", "model"],
        "_load_best_model": ["self"],
        "_get_train_sampler": ["self", "train_dataset"],
    }
    for name, parameters in expected.items():
        assert list(inspect.signature(getattr(Trainer, name)).parameters) == parameters, name
    source = inspect.getsource(Trainer)
    for call in ("self._get_grad_norm(model, grad_norm=grad_norm)", "self._push_from_checkpoint(", "sampler_fn=self._get_train_sampler"):
        assert call in source, f"Trainer no longer calls {call}"
    overridden = {name for name in vars(SpamTrainer) if name.startswith("_") and not name.startswith("__") and hasattr(Trainer, name)}
    assert overridden == {"_get_grad_norm", "_push_from_checkpoint", "_get_train_sampler"}, overridden
