"""Exact parity with transformers' GPT-2 through from_gpt2 / to_gpt2 / the Hub cache / book state dicts."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from hf_spam import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel
from tests.helpers import book_model_like, right_padded, tiny_config, tiny_gpt2_config

ROWS = [[15496, 11, 995, 0, 314, 716, 257], [40, 1101], [3666, 4171, 318, 257, 1332, 13]]
GPT2_SMALL = {"n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}


def gpt2_checkpoint(folder: Path, config: GPT2Config, head=GPT2LMHeadModel, seed: int = 0) -> torch.nn.Module:
    """A real transformers GPT-2 checkpoint with random weights (pretrained ones cannot be downloaded here)."""
    torch.manual_seed(seed)
    model = head(config).eval()
    with torch.no_grad():  # GPT-2 inits biases and LayerNorms to 0/1: randomise them so every tensor is checked
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.normal_(0.0, 0.02).add_(
                    1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight") else 0.0
                )
    model.save_pretrained(folder)
    return model


def assert_lm_parity(ours, theirs, atol=1e-4):
    ids, mask = right_padded(ROWS)
    real = mask.bool()
    with torch.no_grad():
        diff = (ours(ids, attention_mask=mask).logits - theirs(ids, attention_mask=mask).logits)[real].abs().max()
    assert diff <= atol, f"max abs diff {diff}"


def assert_classifier_parity(ours, theirs, atol=1e-4):
    ids, mask = right_padded(ROWS)
    with torch.no_grad():
        diff = (ours(ids, attention_mask=mask).logits - theirs(ids, attention_mask=mask).logits).abs().max()
    assert diff <= atol, f"max abs diff {diff}"


@pytest.mark.parametrize("shape", [pytest.param({}, id="tiny"), pytest.param(GPT2_SMALL, id="gpt2-small-124M", marks=pytest.mark.slow)])
def test_from_gpt2_and_back_give_transformers_logits(tmp_path, shape):
    reference = gpt2_checkpoint(tmp_path / "gpt2", tiny_gpt2_config(**shape))
    ours = GPTForCausalLM.from_gpt2(tmp_path / "gpt2")
    assert ours.out_head.weight is ours.model.tok_emb.weight
    assert_lm_parity(ours, reference)
    assert_lm_parity(ours, ours.to_gpt2())
    assert type(ours.to_gpt2()) is GPT2LMHeadModel

    classifier = GPTForSequenceClassification.from_gpt2(tmp_path / "gpt2", num_labels=2)
    # built on the meta device: every tensor is real, the fresh head drawn as GPT-2 inits a Linear
    assert not any(p.is_meta for p in classifier.parameters())
    assert classifier.out_head.weight.std().item() == pytest.approx(0.02, rel=0.5) and not classifier.out_head.bias.any()
    with torch.no_grad():  # a trained-looking head: the book's Linear(768, 2) has a bias
        classifier.out_head.bias.copy_(torch.tensor([0.7, -1.3]))
    exported = classifier.to_gpt2()
    assert type(exported) is GPT2ForSequenceClassification and exported.config.pad_token_id == 50256
    assert_classifier_parity(classifier, exported)
    torch.testing.assert_close(classifier.model.tok_emb.weight, reference.transformer.wte.weight)


def test_classifier_parity_with_gpt2_for_sequence_classification(tmp_path):
    reference = gpt2_checkpoint(tmp_path / "cls", tiny_gpt2_config(num_labels=3), head=GPT2ForSequenceClassification)
    ours = GPTForSequenceClassification.from_gpt2(tmp_path / "cls")
    assert ours.config.num_labels == 3
    assert_classifier_parity(ours, reference)


def test_exported_classifier_round_trips_through_a_saved_folder(tmp_path):
    gpt2_checkpoint(tmp_path / "gpt2", tiny_gpt2_config())
    classifier = GPTForSequenceClassification.from_gpt2(tmp_path / "gpt2", id2label={0: "ham", 1: "spam"})
    classifier.to_gpt2().save_pretrained(tmp_path / "exported")
    reloaded = GPT2ForSequenceClassification.from_pretrained(tmp_path / "exported")
    assert reloaded.config.id2label == {0: "ham", 1: "spam"}
    assert_classifier_parity(classifier, reloaded)
    assert_classifier_parity(classifier, GPTForSequenceClassification.from_gpt2(tmp_path / "exported"))


def test_last_pooling_exports_as_position_minus_one():
    torch.manual_seed(0)
    classifier = GPTForSequenceClassification(tiny_config(pooling="last")).eval()
    exported = classifier.to_gpt2()
    assert exported.config.pad_token_id is None
    ids = torch.tensor([ROWS[0]])
    with torch.no_grad():
        torch.testing.assert_close(classifier(ids).logits, exported(ids).logits, atol=1e-5, rtol=1e-5)


def test_export_refuses_what_gpt2_cannot_express():
    for kwargs, reason in (({"pooling": "mean"}, "pools with 'mean'"), ({"causal": False}, "causal=False")):
        with pytest.raises(ValueError, match=reason):
            GPTForSequenceClassification(tiny_config(**kwargs)).to_gpt2()
    dependent = GPTForSequenceClassification(tiny_config())
    with torch.no_grad():
        dependent.out_head.weight[1] = dependent.out_head.weight[0]
        dependent.out_head.bias.copy_(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="linearly dependent"):
        dependent.to_gpt2()


@pytest.mark.slow
def test_hub_repo_id_loads_from_the_cache_offline(tmp_path):
    """The user's code path: from_gpt2("gpt2-small") -> openai-community/gpt2 -> the HF cache."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--openai-community--gpt2"
    gpt2_checkpoint(repo / "snapshots" / commit, tiny_gpt2_config())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import GPT2LMHeadModel
        from hf_spam import GPTForCausalLM
        ours = GPTForCausalLM.from_gpt2("gpt2-small")
        theirs = GPT2LMHeadModel.from_pretrained("openai-community/gpt2")
        ids = torch.tensor([{ROWS[0]}])
        print("maxdiff", (ours(ids).logits - theirs(ids).logits).abs().max().item())
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split("maxdiff")[-1]) <= 1e-4


def test_book_state_dicts_load_safely(tmp_path):
    torch.manual_seed(0)
    lm = GPTForCausalLM(tiny_config(tie_word_embeddings=False)).eval()
    book = book_model_like(lm)
    torch.save(book.state_dict(), tmp_path / "model.pth")
    loaded = GPTForCausalLM.from_book_state_dict(tmp_path / "model.pth", n_heads=4)
    assert loaded.config.tie_word_embeddings is False
    ids = torch.tensor([ROWS[0]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, book(ids), atol=1e-5, rtol=1e-5)
    in_memory = GPTForCausalLM.from_book_state_dict(book.state_dict(), n_heads=4)
    with torch.no_grad():  # the model holds copies: training it leaves the caller's book model alone
        in_memory.model.trf_blocks[0].att.W_query.weight.add_(1.0)
    torch.testing.assert_close(book.trf_blocks[0].att.W_query.weight, lm.model.trf_blocks[0].att.W_query.weight)

    # chapter 6: model.out_head = torch.nn.Linear(emb_dim, 2); torch.save(model.state_dict(), "review_classifier.pth")
    classifier = GPTForSequenceClassification(tiny_config(pooling="last")).eval()
    book_classifier = book_model_like(classifier)
    torch.save(book_classifier.state_dict(), tmp_path / "review_classifier.pth")
    loaded = GPTForSequenceClassification.from_book_state_dict(tmp_path / "review_classifier.pth", n_heads=4, pooling="last")
    ids, _ = right_padded(ROWS)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, book_classifier(ids)[:, -1, :], atol=1e-5, rtol=1e-5)

    class Evil:  # a pickle that would run code on load
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"tok_emb.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="Weights only load failed"):
        GPTForCausalLM.from_book_state_dict(tmp_path / "evil.pth")


def test_mismatched_checkpoints_give_clear_errors(tmp_path):
    lm = GPTForCausalLM(tiny_config())
    with pytest.raises(
        ValueError, match=r"(?s)does not match the config's shapes.*tok_emb.weight: checkpoint \(50257, 64\) vs model \(50257, 128\)"
    ):
        GPTForCausalLM.from_book_state_dict(
            {k.removeprefix("model."): v for k, v in lm.state_dict().items()}, config=tiny_config(emb_dim=128)
        )
    with pytest.raises(ValueError, match="not a GPT-2 width; pass n_heads"):
        GPTModel.from_book_state_dict({k.removeprefix("model."): v for k, v in lm.state_dict().items()})
    gpt2_checkpoint(tmp_path / "gpt2", tiny_gpt2_config())
    lm.save_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match="not GPT-2"):
        GPTForCausalLM.from_gpt2(tmp_path / "ours")
    wrong = GPTConfig.from_pretrained(tmp_path / "ours")
    wrong.context_length = 64
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        GPTForCausalLM.from_pretrained(tmp_path / "ours", config=wrong)
