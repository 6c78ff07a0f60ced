"""The top block computes only the pooled position (exact), and the forward never synchronises with
the device (no data-dependent Python control flow), so it also compiles."""

import pytest
import torch

from hf_spam import GPTForSequenceClassification
from hf_spam.arguments import ModelArguments
from hf_spam.model_setup import configure_trainable
from tests.helpers import left_padded, right_padded, tiny_config

ROWS = [[15496, 11, 995, 0, 318], [40, 1842], [464, 2068, 7586, 21831, 18045, 625, 262]]


def full_computation(model, ids, mask, labels):
    """The reference: every position through every block, then the pooling, head and loss."""
    hidden = model.model(ids, model.trunk_mask(mask)).last_hidden_state
    logits = model.out_head(model.pool(hidden, model.real_tokens(ids, mask, hidden)))
    return logits, torch.nn.functional.cross_entropy(logits, labels)


def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("pooling", ["last_non_pad", "last", "first"])
@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("cached", [False, True, "packed"])
def test_one_position_top_block_equals_the_full_computation(pooling, padding, causal, cached):
    """``packed``: the cache's collator also says which positions hold tokens (``prefix_token_index``), and the
    top block computes keys and values there only; ``last`` pooling reads pads as tokens, so it must ignore it."""
    torch.manual_seed(0)
    model = configure_trainable(GPTForSequenceClassification(tiny_config(n_layers=3, pooling=pooling, causal=causal)), ModelArguments())
    ids, mask = (right_padded if padding == "right" else left_padded)(ROWS)
    labels = torch.tensor([0, 1, 1])

    expected_logits, expected_loss = full_computation(model, ids, mask, labels)
    expected_loss.backward()
    expected = gradients(model)
    model.zero_grad()

    if cached:
        with torch.no_grad():
            prefix = model.model.prefix(ids, model.trunk_mask(mask), 2)
        packed = {"prefix_token_index": mask.flatten().nonzero().squeeze(1)} if cached == "packed" else {}
        out = model(input_ids=ids, attention_mask=mask, labels=labels, prefix_hidden_states=prefix, prefix_depth=2, **packed)
    else:
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    got = gradients(model)

    torch.testing.assert_close(out.logits, expected_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, expected_loss, atol=1e-6, rtol=1e-5)
    assert got.keys() == expected.keys() and "model.trf_blocks.2.att.W_query.weight" in got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_all_blocks_cached_reads_only_the_pooled_rows():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(n_layers=2)).eval()
    ids, mask = right_padded(ROWS)
    with torch.no_grad():
        prefix = model.model.prefix(ids, mask, 2)
        torch.testing.assert_close(
            model(input_ids=ids, attention_mask=mask, prefix_hidden_states=prefix, prefix_depth=2).logits,
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
        prefix = model.model.prefix(ids, model.trunk_mask(mask), 1)
    token_index = torch.tensor([row * ids.shape[1] + i for row, m in enumerate(mask.tolist()) for i, keep in enumerate(m) if keep])
    request.getfixturevalue("no_host_sync")
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    model(input_ids=ids, attention_mask=mask, labels=labels, prefix_hidden_states=prefix, prefix_depth=1, prefix_token_index=token_index)
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
