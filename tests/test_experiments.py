"""Chapter 6's bonus experiments: their data split, their random init, and each option that changes
the computation, checked against an independent computation."""

import pytest
import torch

from hf_spam import GPTConfig, GPTForSequenceClassification
from hf_spam.data import load_sms_spam
from hf_spam.training.experiments import REDUCED_SHAPES
from hf_spam.training.model_setup import book_init_
from tests.helpers import parse, right_padded, tiny_config
from tests.support import book_reference


def test_bonus_split_is_the_bonus_scripts_row_for_row(sms_file, tmp_path):
    reference = book_reference.bonus_splits(sms_file, tmp_path)
    ours = load_sms_spam(sms_file, split="bonus")
    for name, frame in zip(("train", "validation", "test"), reference, strict=True):
        assert ours[name]["text"] == frame["Text"].tolist(), name
        assert ours[name]["label"] == frame["Label"].tolist(), name
    assert ours["test"]["text"] != load_sms_spam(sms_file)["test"]["text"], "the bonus split differs from the chapter's"


def test_book_random_init_gives_the_books_tensors():
    config = tiny_config(n_layers=2, num_labels=2)
    ours = GPTForSequenceClassification(config)
    book_init_(ours)
    fields = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")
    torch.manual_seed(123)
    book = book_reference.GPTModel({k: getattr(config, k) for k in fields})
    torch.manual_seed(123)
    book.out_head = torch.nn.Linear(config.emb_dim, 2)
    expected = {k: v for k, v in book.state_dict().items() if not k.endswith("att.mask")}
    got = {k.removeprefix("model."): v for k, v in ours.state_dict().items()}
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_mean_all_pooling_is_the_books_average_of_the_output_over_every_position():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(pooling="mean_all", padded_length=12)).eval()
    ids, mask = right_padded([[15496, 11, 995], [40, 1842, 257, 3797, 286]])
    book = book_reference.GPTModel(
        {k: getattr(model.config, k) for k in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")}
    )
    book.out_head = torch.nn.Linear(model.config.emb_dim, 2)
    book.load_state_dict({k.removeprefix("model."): v for k, v in model.state_dict().items()}, strict=False)
    padded = torch.cat([ids, torch.full((2, 12 - ids.shape[1]), 50256)], dim=1)  # the book pads to the training length
    with torch.no_grad():
        expected = book.eval()(padded).mean(dim=1)  # bonus script: logits = model_output.mean(dim=1)
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-5)


def test_ignore_index_reaches_the_loss():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(loss_ignore_index=1))
    ids, _ = right_padded([[1, 2, 3], [4, 5, 6]])
    out = model(ids, labels=torch.tensor([0, 1]))
    only_first = torch.nn.functional.cross_entropy(out.logits[:1].float(), torch.tensor([0]))
    torch.testing.assert_close(out.loss, only_first)
    assert GPTConfig(loss_ignore_index=50256).loss_ignore_index == 50256


def test_list_shows_the_19_rows_with_the_books_settings():
    from hf_spam.training.experiments import EXPERIMENTS, listing, select

    assert [e.number for e in EXPERIMENTS] == list(range(1, 20))
    text = listing()
    assert text.count("\n| ") == 19  # one line per row (the header starts the text, the separator starts with "|-")
    assert select(["10"])[0].name == "random_weights" and select(["no_padding"])[0].number == 14
    row11, row12 = select(["11", "12"])
    assert row11.args == ("--trainable_layers", "lora", "--lora_rank", "16", "--lora_alpha", "256")  # the bonus LoRA: alpha * x A B
    assert row12.model.startswith("gpt2-xl") and row12.args[-1] == "128"
    with pytest.raises(ValueError, match="Unknown experiment '20'"):
        select(["20"])


@pytest.mark.slow
def test_accumulating_8_single_examples_equals_one_batch_of_8(sms_file, tmp_path):
    """Row 15 (batch 1, 8 accumulation steps) and the book's batch of 8 take the same first step:
    the book divides each loss by the accumulation steps, as Trainer does for this model."""
    from safetensors.torch import load_file

    from hf_spam.training.recipe import run
    from tests.helpers import parse

    common = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2"]
    common += ["--trainable_layers", "all", "--padding", "none", "--max_steps", "1", "--train_sampling_strategy", "sequential"]
    # plain SGD with rate 1: the step is the gradient itself, so the comparison is of gradients (Adam would rescale them)
    common += [
        "--initial_eval_batches",
        "0",
        "--save_strategy",
        "no",
        "--eval_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--optim",
        "sgd",
        "--learning_rate",
        "1",
    ]
    run(*parse(*common, "--per_device_train_batch_size", "8", "--padding", "dynamic", "--output_dir", str(tmp_path / "batch")))
    run(
        *parse(
            *common,
            "--per_device_train_batch_size",
            "1",
            "--gradient_accumulation_steps",
            "8",
            "--output_dir",
            str(tmp_path / "accumulated"),
        )
    )
    batch, accumulated = (load_file(tmp_path / name / "model.safetensors") for name in ("batch", "accumulated"))
    assert batch.keys() == accumulated.keys()
    for key in batch:
        torch.testing.assert_close(accumulated[key], batch[key], atol=1e-6, rtol=1e-5)


# the rows whose options take code paths of their own: the reference (the book's padding and last token), LoRA, padding
# to the model's context, no padding with accumulation, no causal mask, pooled embeddings; every other row's option
# (a pooling, which layers train, a size, the loss's ignore index) is a choice among those paths, tested on its own
# elsewhere, and its command line is checked by test_every_rows_command_line_gives_the_options_it_names
DISTINCT_ROWS = ["1", "11", "13", "15", "17", "19"]


def test_every_rows_command_line_gives_the_options_it_names():
    """Every row's ``hf-spam train`` arguments parse as the command line parses them, each option the row names lands
    in its dataclass with the row's value, and the pooling and padding go together."""
    from hf_spam.training.experiments import BONUS_RECIPE, EXPERIMENTS, row_argv
    from hf_spam.training.recipe import pooling_for

    for experiment in EXPERIMENTS:
        argv = row_argv(experiment, ["--data_file", "sms.txt", "--max_steps", "2"], reduced=True, offline_random=True)
        parsed = parse(*argv, "--output_dir", "out")
        options = {name: value for group in parsed for name, value in vars(group).items()}
        named = [*BONUS_RECIPE, *experiment.argv()]
        for flag, value in dict(zip(named[::2], named[1::2], strict=True)).items():  # a row's own option overrides the recipe's
            given = options[flag.removeprefix("--")]
            if flag == "--config_overrides":
                assert value in given and given.startswith(REDUCED_SHAPES[experiment.model]), (experiment.number, given)
            elif flag != "--weights":  # random wherever OpenAI's weights cannot be had (offline_random)
                given = getattr(given, "value", given)  # Trainer's strategies are enums
                same = (
                    given == float(value) if isinstance(given, int | float) and not isinstance(given, bool) else str(given).lower() == value
                )
                assert same, (experiment.number, flag, given)
        assert options["weights"] == "random" and options["split"] == "bonus"
        pooling_for(options["pooling"], options["padding"])  # raises where the two do not go together


@pytest.mark.slow
def test_the_rows_with_code_paths_of_their_own_run_and_land_in_the_table(sms_file, tmp_path):
    from hf_spam.training.experiments import run_experiments, select, write_table

    small = tmp_path / "sms_subset"
    small.write_bytes(b"".join(sms_file.read_bytes().splitlines(keepends=True)[:700]))  # ~90 spam: a 180-message balanced set
    table = run_experiments(
        select(DISTINCT_ROWS), ["--data_file", str(small), "--max_steps", "2"], tmp_path / "out", reduced=True, weights="random"
    )
    write_table(table, tmp_path / "out")
    assert [r["row"] for r in table["rows"]] == [int(row) for row in DISTINCT_ROWS]
    for row in table["rows"]:
        for key in ("train_accuracy", "validation_accuracy", "test_accuracy", "training_minutes"):
            assert 0 <= row[key] < float("inf"), (row["row"], key)
        assert row["command"].startswith("hf-spam train --split bonus") and row["device"]
    assert "random (the book's init) for rows [1, 11, 13" in table["header"]
    markdown = (tmp_path / "out" / "experiments.md").read_text()
    assert markdown.count("\n| ") == len(DISTINCT_ROWS) + 1 and "| 19 | gpt2-small (124M) reduced" in markdown
    assert (tmp_path / "out" / "experiments.json").is_file()


@pytest.mark.parametrize(("pooling", "causal"), [("first", True), ("last_non_pad", True), ("last", False)])
def test_token_choices_and_no_causal_mask_match_the_bonus_scripts_computation(pooling, causal):
    """Rows 2 (position 0), 16 ("flexible": last token that is not 50256) and 17 (no causal mask: the book's
    attention with its mask buffer emptied) against the book's model on the padded batch, as the bonus script reads it."""
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(pooling=pooling, causal=causal, padded_length=10)).eval()
    fields = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")
    book = book_reference.GPTModel({k: getattr(model.config, k) for k in fields})
    book.out_head = torch.nn.Linear(model.config.emb_dim, 2)
    book.load_state_dict({k.removeprefix("model."): v for k, v in model.state_dict().items()}, strict=False)
    if not causal:
        for block in book.trf_blocks:
            block.att.mask.zero_()  # the bonus script's disable_causal_mask skips the masking
    ids, mask = right_padded([[15496, 11, 995], [40, 1842, 257, 3797, 286, 262, 3290]])
    padded = torch.cat([ids, torch.full((2, 10 - ids.shape[1]), 50256)], dim=1)  # padded to the longest training message
    with torch.no_grad():
        outputs = book.eval()(padded)
        if pooling == "first":
            expected = outputs[:, 0, :]
        elif pooling == "last_non_pad":
            expected = outputs[torch.arange(2), (padded != 50256).sum(dim=1) - 1]  # the bonus script's "flexible"
        else:
            expected = outputs[:, -1, :]
        got = model(padded if pooling == "last" else ids, attention_mask=None if pooling == "last" else mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
