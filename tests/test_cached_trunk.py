"""Training on the cached frozen prefix must be the same computation as training the whole model."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_spam import GPTForSequenceClassification
from hf_spam.arguments import ModelArguments
from hf_spam.cached_trunk import collate_cached, frozen_depth, open_prefix_cache
from hf_spam.data import load_sms_spam, tokenize
from hf_spam.model_setup import configure_trainable
from tests.helpers import tiny_config
from tests.test_training import parse


@pytest.fixture(scope="module")
def sms_splits(sms_file):
    return load_sms_spam(sms_file)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("pooling", "padding"), [("last_non_pad", "dynamic"), ("last", "longest_train"), ("mean", "dynamic")])
def test_cached_top_gives_the_same_loss_and_gradients(sms_splits, pooling, padding, tmp_path):
    torch.manual_seed(0)
    model = configure_trainable(
        GPTForSequenceClassification(tiny_config(n_layers=3, pooling=pooling, context_length=128)), ModelArguments()
    )
    depth = frozen_depth(model)
    assert depth == 2
    data = tokenize(sms_splits, padding, context_length=128)
    examples = data.splits["train"].select(range(8))
    cached = open_prefix_cache(model, examples, depth, tmp_path, batch_size=3)  # other batches than the one trained on
    batch = collate_cached([cached[i] for i in range(8)], pad_token_id=50256)
    model.train()
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    full.loss.backward()
    expected = grads(model)
    model.zero_grad()
    top = model(**batch)  # the classifier's own forward, from the cached prefix
    top.loss.backward()
    got = grads(model)

    torch.testing.assert_close(top.logits, full.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(top.loss, full.loss, atol=1e-6, rtol=1e-6)
    assert expected.keys() == got.keys() and all(n.startswith(("out_head", "model.trf_blocks.2", "model.final_norm")) for n in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-4)


def test_nothing_is_cached_when_it_would_not_be_exact():
    assert frozen_depth(configure_trainable(GPTForSequenceClassification(tiny_config()), ModelArguments(trainable_layers="all"))) == 0
    assert frozen_depth(configure_trainable(GPTForSequenceClassification(tiny_config(drop_rate=0.1)), ModelArguments())) == 0
    assert (
        frozen_depth(configure_trainable(GPTForSequenceClassification(tiny_config()), ModelArguments(trainable_layers="last_layer"))) == 2
    )


@pytest.mark.slow
def test_saved_model_reproduces_the_accuracy_measured_on_the_cache(tmp_path, sms_file, sms_splits):
    argv = ["--data_file", str(sms_file), "--weights", "random", "--config_overrides", "n_layers=2,emb_dim=64,n_heads=2"]
    from hf_spam.training import run

    results = run(*parse(*argv, "--num_train_epochs", "1", "--initial_eval_batches", "0", "--output_dir", str(tmp_path)))
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    test = tokenize(sms_splits, "longest_train", context_length=model.config.context_length).splits["test"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(test["input_ids"]), attention_mask=torch.tensor(test["attention_mask"])).logits
    accuracy = (logits.argmax(-1) == torch.tensor(test["label"])).sum().item() / len(test)
    assert accuracy == pytest.approx(results["test_accuracy"], abs=1e-9)
    assert json.loads((tmp_path / "all_results.json").read_text())["test_accuracy"] == results["test_accuracy"]


def test_total_flos_counts_the_top_the_cached_steps_run(sms_splits, tmp_path):
    """Trainer's ``total_flos`` (6 x tokens x parameters) counts, on the cached prefix, the parameters each step
    runs through (last block, final norm, head), not the frozen blocks it never touches; uncached, the whole model."""
    from hf_spam.arguments import SpamTrainingArguments
    from hf_spam.cached_trunk import cached_splits
    from hf_spam.trainer import SpamTrainer

    torch.manual_seed(0)
    model = configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, context_length=128)), ModelArguments())
    data = tokenize(sms_splits, "dynamic", context_length=128)
    cached, collator = cached_splits(model, data, 8, tmp_path / "cache")
    top = sum(p.numel() for m in (model.model.trf_blocks[2], model.model.final_norm, model.out_head) for p in m.parameters())
    outside_embeddings = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("model.tok_emb", "model.pos_emb")))
    assert top < outside_embeddings
    for name, train, data_collator, parameters in (
        ("cached", cached["train"], collator, top),
        ("uncached", data.splits["train"], data.collator, outside_embeddings),
    ):
        args = SpamTrainingArguments(
            output_dir=str(tmp_path / name), max_steps=3, eval_strategy="no", save_strategy="no", load_best_model_at_end=False, report_to=[]
        )
        trainer = SpamTrainer(model=model, args=args, train_dataset=train, data_collator=data_collator)
        trainer.train()
        tokens = sum(batch["input_ids"].numel() for batch, _ in zip(trainer.get_train_dataloader(), range(3), strict=False))
        assert trainer.state.total_flos == 6 * tokens * parameters, name


def test_gradient_norm_is_taken_on_logging_steps_only_and_is_the_true_norm(sms_splits, tmp_path):
    """Trainer would take the gradient norm on every step to log it; SpamTrainer takes it on the steps that log,
    and the logged value is that step's norm (computed here independently, before the optimizer update)."""
    from transformers import TrainerCallback

    from hf_spam.arguments import SpamTrainingArguments
    from hf_spam.cached_trunk import cached_splits
    from hf_spam.trainer import SpamTrainer

    norms = {}

    class StepNorms(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
            norms[state.global_step + 1] = torch.linalg.vector_norm(torch.cat(grads)).item()

    torch.manual_seed(0)
    model = configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, context_length=128)), ModelArguments())
    cached, collator = cached_splits(model, tokenize(sms_splits, "dynamic", context_length=128), 8, tmp_path / "cache")
    args = SpamTrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=5,
        logging_steps=2,
        logging_first_step=True,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to=[],
    )
    trainer = SpamTrainer(model=model, args=args, train_dataset=cached["train"], data_collator=collator, callbacks=[StepNorms()])
    taken = []
    clip = trainer.accelerator.clip_grad_norm_
    trainer.accelerator.clip_grad_norm_ = lambda *a, **k: taken.append(1) or clip(*a, **k)
    trainer.train()
    logged = {entry["step"]: entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry}
    assert sorted(logged) == [1, 2, 4] and len(taken) == 3, (logged, len(taken))
    for step, value in logged.items():
        assert value == pytest.approx(norms[step], rel=1e-5)
