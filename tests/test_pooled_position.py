"""The top block computes only the pooled position (exact), and the forward never synchronises with
the device (no data-dependent Python control flow), so it also compiles."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hf_spam import GPTForSequenceClassification
from hf_spam.models.gpt.pooled_position import _real_first, attention_at, block_at, blocks_mask, pool, prefix, real_tokens
from hf_spam.training.model_setup import configure_trainable
from tests.helpers import left_padded, right_padded, tiny_config

ROWS = [[15496, 11, 995, 0, 318], [40, 1842], [464, 2068, 7586, 21831, 18045, 625, 262]]


def full_computation(model, ids, mask, labels):
    """The reference: every position through every block, then the pooling, head and loss."""
    hidden = model.model(ids, blocks_mask(model.config.pooling, mask)).last_hidden_state
    logits = model.out_head(pool(model.config.pooling, hidden, real_tokens(ids, mask, model.config.pad_token_id, hidden)))
    return logits, torch.nn.functional.cross_entropy(logits, labels)


def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def randomized(model):
    """Every parameter away from its initial value: LayerNorm scales of 1, shifts and biases of 0 would hide a
    wrongly folded scale, shift or bias."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


@pytest.mark.parametrize("pooling", ["last_non_pad", "last", "first"])
@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_one_position_top_block_equals_the_full_computation(pooling, padding, causal, cached, qkv_bias):
    """The top block never forms keys and values (``pooled_position.attention_at``): logits, loss and every
    gradient, the key bias's (zero up to rounding: softmax ignores a constant) included, match the full blocks."""
    torch.manual_seed(0)
    config = tiny_config(n_layers=3, pooling=pooling, causal=causal, qkv_bias=qkv_bias)
    model = configure_trainable(randomized(GPTForSequenceClassification(config)), "last_block")
    ids, mask = (right_padded if padding == "right" else left_padded)(ROWS)
    labels = torch.tensor([0, 1, 1])

    expected_logits, expected_loss = full_computation(model, ids, mask, labels)
    expected_loss.backward()
    expected = gradients(model)
    model.zero_grad()

    if cached:
        with torch.no_grad():
            computed = prefix(model.model, ids, blocks_mask(model.config.pooling, mask), 2)
        out = model(input_ids=ids, attention_mask=mask, labels=labels, prefix_hidden_states=computed, prefix_depth=2)
    else:
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    got = gradients(model)

    torch.testing.assert_close(out.logits, expected_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, expected_loss, atol=1e-6, rtol=1e-5)
    assert got.keys() == expected.keys() and "model.trf_blocks.2.norm1.scale" in got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize(
    "problem_type, num_labels, labels",
    [
        ("regression", 1, torch.tensor([0.5, -1.0, 2.0])),
        ("multi_label_classification", 3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])),
    ],
)
@pytest.mark.parametrize("cached", [False, True])
def test_one_position_top_block_is_exact_for_regression_and_multi_label(problem_type, num_labels, labels, cached):
    """The cached prefix and the one-position top block under MSE and BCE: the full computation's loss and gradients."""
    torch.manual_seed(0)
    config = tiny_config(n_layers=3, num_labels=num_labels, problem_type=problem_type)
    model = configure_trainable(randomized(GPTForSequenceClassification(config)), "last_block")
    ids, mask = left_padded(ROWS)
    hidden = model.model(ids, mask).last_hidden_state
    logits = model.out_head(pool("last_non_pad", hidden, mask))
    loss = (
        torch.nn.functional.mse_loss(logits.view(-1), labels)
        if problem_type == "regression"
        else torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    )
    loss.backward()
    expected = gradients(model)
    model.zero_grad()
    extra = {}
    if cached:
        with torch.no_grad():
            extra = {"prefix_hidden_states": prefix(model.model, ids, mask, 2), "prefix_depth": 2}
    out = model(input_ids=ids, attention_mask=mask, labels=labels, **extra)
    out.loss.backward()
    torch.testing.assert_close(out.loss, loss, atol=1e-6, rtol=1e-5)
    got = gradients(model)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


def test_one_position_top_block_keeps_lora_adapters_on_keys_and_values():
    """LoRA wraps W_key and W_value (their .weight is then only the base of the map): with adapters away from
    zero, logits and every gradient, the top block's key and value adapters' included, match the full blocks."""
    torch.manual_seed(0)
    peft_model = configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=2)), "lora", lora_rank=2)
    model = peft_model.get_base_model()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.3)
    ids, mask = right_padded(ROWS)
    labels = torch.tensor([0, 1, 1])

    expected_logits, expected_loss = full_computation(model, ids, mask, labels)
    expected_loss.backward()
    expected = gradients(model)
    model.zero_grad()
    out = peft_model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    got = gradients(model)

    torch.testing.assert_close(out.logits, expected_logits, atol=1e-5, rtol=1e-5)
    assert got.keys() == expected.keys()
    for adapter in ("W_key.lora_A", "W_key.lora_B", "W_value.lora_A", "W_value.lora_B"):
        assert got[f"model.trf_blocks.1.att.{adapter}.default.weight"].abs().sum() > 0
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


def test_one_position_attention_with_dropout_matches_the_book_formula():
    """With attention dropout the weights no longer sum to 1 and the folded shift and value bias are scaled
    by their sum: the book's explicit causal attention, with the same dropped weights, gives the same output."""
    torch.manual_seed(0)
    model = randomized(GPTForSequenceClassification(tiny_config(n_layers=1, qkv_bias=True, drop_rate=0.5)))
    block = model.model.trf_blocks[0]
    att = block.att
    x, index = torch.randn(2, 6, 64), torch.tensor([5, 3])
    kept = {}
    att.dropout.register_forward_hook(lambda module, args, out: kept.setdefault("weights", out))
    block.train()
    got = attention_at(att, torch.nn.functional.layer_norm(x, (64,)), index, None, block.norm1.scale, block.norm1.shift)

    y = block.norm1(x)
    keys, values = (linear(y).view(2, 6, 4, 16).transpose(1, 2) for linear in (att.W_key, att.W_value))
    query = att.W_query(y[torch.arange(2), index]).view(2, 4, 1, 16)
    scores = (query @ keys.transpose(2, 3)).squeeze(2) / 4.0  # (b, nh, T) / sqrt(head_dim)
    future = (torch.arange(6) > index[:, None])[:, None, :]
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    dropped = kept["weights"]
    assert (dropped == 0).any() and not torch.allclose(dropped.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(dropped, torch.where(dropped == 0, 0.0, weights / 0.5))  # kept weights rescaled by 1/(1-p)
    context = (dropped.unsqueeze(2) @ values).transpose(1, 2).reshape(2, 1, 64)
    torch.testing.assert_close(got, att.out_proj(context), atol=1e-5, rtol=1e-5)


def test_one_position_top_block_ignores_autocast():
    """Its products are bound by reading the weights: it runs in fp32 under bf16 autocast, with the same result."""
    torch.manual_seed(0)
    block = randomized(GPTForSequenceClassification(tiny_config(n_layers=1, qkv_bias=True))).model.trf_blocks[0]
    x, index = torch.randn(3, 7, 64), torch.tensor([6, 2, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = block_at(block, x.bfloat16(), index)
        assert block.att(block.norm1(x)).dtype == torch.bfloat16  # the full block does follow autocast
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, block_at(block, x.bfloat16().float(), index), atol=0, rtol=0)


def test_all_blocks_cached_reads_only_the_pooled_rows():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(n_layers=2)).eval()
    ids, mask = right_padded(ROWS)
    with torch.no_grad():
        computed = prefix(model.model, ids, mask, 2)
        torch.testing.assert_close(
            model(input_ids=ids, attention_mask=mask, prefix_hidden_states=computed, prefix_depth=2).logits,
            model(input_ids=ids, attention_mask=mask).logits,
        )


class HostSync(RuntimeError):
    pass


@pytest.fixture
def no_host_sync(monkeypatch):
    """Any tensor -> Python value conversion (what waits for a GPU) raises inside the block."""

    def refuse(*args, **kwargs):
        raise HostSync("the forward asked for a tensor's value on the host")

    for name in ("__bool__", "__int__", "__float__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("pooling", ["last_non_pad", "last", "first", "mean", "mean_all"])
def test_the_forward_never_reads_values_back_to_the_host(pooling, request):
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(n_layers=2, pooling=pooling, padded_length=12))
    ids, mask = left_padded(ROWS)
    labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        computed = prefix(model.model, ids, blocks_mask(model.config.pooling, mask), 1)
    request.getfixturevalue("no_host_sync")
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    model(input_ids=ids, attention_mask=mask, labels=labels, prefix_hidden_states=computed, prefix_depth=1)
    with pytest.raises(HostSync):  # the fixture does catch a conversion
        bool(ids.sum())


@pytest.mark.slow
def test_the_classifier_compiles_as_one_graph():
    """``torch.compile(fullgraph=True)`` fails on any graph break (data-dependent control flow, host reads)."""
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(n_layers=2)).eval()
    ids, mask = right_padded(ROWS)
    labels = torch.tensor([0, 1, 1])
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        got, expected = (
            compiled(input_ids=ids, attention_mask=mask, labels=labels),
            model(input_ids=ids, attention_mask=mask, labels=labels),
        )
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)


@given(
    st.lists(st.lists(st.booleans(), min_size=1, max_size=12), min_size=1, max_size=6).filter(lambda rows: len({len(r) for r in rows}) == 1)
)
def test_real_tokens_first_is_a_stable_sort_of_the_pad_mask(rows):
    """The order is computed from ranks (ONNX has no stable sort to export); it must be exactly the stable argsort."""
    mask = torch.tensor(rows, dtype=torch.long)
    order, real = _real_first(torch.zeros_like(mask), mask)
    expected = torch.argsort((~mask.bool()).to(torch.int8), dim=1, stable=True)
    assert torch.equal(order, expected) and torch.equal(real, mask.bool().gather(1, expected))
