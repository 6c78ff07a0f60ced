"""The from-scratch GPT against the book's own code: attention, generation, pooling, errors."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from hf_spam import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel
from tests import book_reference
from tests.helpers import book_model_like, left_padded, right_padded, tiny_config

ROWS = [[15496, 11, 995, 0, 314, 716], [40, 1101], [3666, 4171, 318, 257, 1332, 13, 632, 4477, 0, 198]]


def test_module_tree_uses_the_books_names():
    names = {n for n, _ in GPTForSequenceClassification(tiny_config()).named_parameters()}
    for expected in (
        "model.tok_emb.weight",
        "model.pos_emb.weight",
        "model.trf_blocks.1.att.W_query.weight",
        "model.trf_blocks.1.att.W_key.bias",
        "model.trf_blocks.1.att.out_proj.weight",
        "model.trf_blocks.1.ff.layers.2.weight",
        "model.trf_blocks.1.norm2.scale",
        "model.final_norm.shift",
        "out_head.bias",
    ):
        assert expected in names


def test_config_hf_names_presets_and_errors():
    config = GPTConfig.from_preset("gpt2-medium")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.max_position_embeddings) == (
        1024,
        24,
        16,
        1024,
    )
    assert GPTConfig.from_preset("gpt2-xl (1558M)").emb_dim == 1600
    assert GPTConfig.from_preset("openai-community/gpt2-large").n_layers == 36
    assert GPTConfig().pad_token_id == 50256 and GPTConfig().num_labels == 2
    with pytest.raises(ValueError, match="Unknown GPT-2 preset 'gpt2-huge'"):
        GPTConfig.from_preset("gpt2-huge")
    with pytest.raises(ValueError, match="pooling"):
        GPTConfig(pooling="max")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(emb_dim=100, n_heads=3)


def test_auto_classes_are_registered():
    config = AutoConfig.for_model("hf_spam_gpt", **{k: v for k, v in tiny_config().to_dict().items() if k != "model_type"})
    assert type(AutoModel.from_config(config)) is GPTModel
    assert type(AutoModelForCausalLM.from_config(config)) is GPTForCausalLM
    assert type(AutoModelForSequenceClassification.from_config(config)) is GPTForSequenceClassification


def test_lm_head_is_tied_like_gpt2():
    model = GPTForCausalLM(tiny_config())
    assert model.out_head.weight is model.model.tok_emb.weight
    untied = GPTForCausalLM(tiny_config(tie_word_embeddings=False))
    assert untied.out_head.weight is not untied.model.tok_emb.weight
    assert not torch.equal(untied.out_head.weight, untied.model.tok_emb.weight)


def test_random_init_follows_gpt2_including_the_scaled_residual_projections():
    """Same init rule as transformers' GPT-2: N(0, 0.02), and N(0, 0.02/sqrt(2 n_layers)) for the two
    projections that write into the residual stream; compared by standard deviation on the 124M shape's width."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    ours = GPTForCausalLM(tiny_config(emb_dim=256, n_layers=6, n_heads=4)).model.trf_blocks[0]
    theirs = GPT2LMHeadModel(GPT2Config(n_embd=256, n_layer=6, n_head=4, n_positions=32)).transformer.h[0]
    pairs = {
        "W_query": (ours.att.W_query.weight, theirs.attn.c_attn.weight[:, :256]),
        "out_proj": (ours.att.out_proj.weight, theirs.attn.c_proj.weight),
        "ff.layers[0]": (ours.ff.layers[0].weight, theirs.mlp.c_fc.weight),
        "ff.layers[2]": (ours.ff.layers[2].weight, theirs.mlp.c_proj.weight),
    }
    for name, (mine, reference) in pairs.items():
        assert mine.std().item() == pytest.approx(reference.std().item(), rel=0.03), name
    assert ours.att.out_proj.weight.std().item() == pytest.approx(0.02 / (2 * 6) ** 0.5, rel=0.03)
    assert ours.ff.layers[0].weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_sdpa_attention_equals_the_books_masked_softmax():
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_config(tie_word_embeddings=False)).eval()
    book = book_model_like(model)
    ids = torch.randint(0, 50257, (3, 32))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, book(ids), atol=1e-5, rtol=1e-5)


def test_no_causal_mask_lets_early_tokens_see_later_ones():
    torch.manual_seed(0)
    ids = torch.randint(0, 50257, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 50257
    for causal, sees_future in ((True, False), (False, True)):
        model = GPTModel(tiny_config(causal=causal)).eval()
        with torch.no_grad():
            first = model(ids).last_hidden_state[0, 0]
            first_changed = model(changed).last_hidden_state[0, 0]
        assert (not torch.equal(first, first_changed)) is sees_future


def test_greedy_generate_reproduces_generate_text_simple():
    torch.manual_seed(0)
    # no eos: generate() must not stop early where the book's loop keeps going
    model = GPTForCausalLM(tiny_config(eos_token_id=None, pad_token_id=None, bos_token_id=None)).eval()
    book = book_model_like(model)
    prompt = torch.tensor([[6109, 3626, 6100, 345]])  # "Every effort moves you"
    ours = model.generate(prompt, max_new_tokens=40, do_sample=False)  # runs past context_length=32
    expected = book_reference.generate_text_simple(book, prompt, max_new_tokens=40, context_size=32)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("pooling", ["last_non_pad", "mean", "first"])
@pytest.mark.parametrize("padder", [right_padded, left_padded])
def test_padding_never_changes_pooled_logits(pooling, padder):
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(pooling=pooling, num_labels=3)).eval()
    ids, mask = padder(ROWS)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        alone = torch.cat([model(torch.tensor([row])).logits for row in ROWS])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_last_non_pad_without_mask_falls_back_to_pad_token_id():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config()).eval()
    ids, mask = right_padded(ROWS)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, model(ids, attention_mask=mask).logits)


def test_last_pooling_reads_the_pad_position_like_the_book():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(pooling="last")).eval()
    book = book_model_like(model)
    ids, mask = right_padded(ROWS)
    with torch.no_grad():
        expected = book(ids)[:, -1, :]  # chapter 6: logits = model(input_batch)[:, -1, :]
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-5)
        alone = torch.cat([model(torch.tensor([row])).logits for row in ROWS])
    assert not torch.allclose(model(ids).logits, alone, atol=1e-3), "with pads, position -1 is a pad token"


def test_classifier_loss_is_cross_entropy_of_the_logits():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config()).eval()
    ids, mask = right_padded(ROWS)
    labels = torch.tensor([0, 1, 1])
    out = model(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_clear_errors_for_bad_inputs():
    model = GPTForSequenceClassification(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"Token id 50257 is outside the vocabulary \[0, 50257\)"):
        model(torch.tensor([[1, 2, 50257]]))
    with pytest.raises(ValueError, match="Token id -1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="Sequence length 33 exceeds context_length 32; truncate"):
        model(torch.zeros(1, 33, dtype=torch.long))
