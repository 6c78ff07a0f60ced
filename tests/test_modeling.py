"""The from-scratch GPT against the book's own code: attention, generation, pooling, errors."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, DynamicCache
from transformers.utils import logging

from hf_spam import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel
from tests.helpers import book_model_like, left_padded, right_padded, tiny_config
from tests.support import book_reference

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


# The contract every transformers model keeps (transformers' ModelTesterMixin / GenerationTesterMixin),
# checked against transformers' own GPT-2 holding the same weights (``to_gpt2``) where it has the feature.


def trained_like(model):
    """Every parameter away from its init (LayerNorm 1/0, zero biases would hide a wrong term)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


def lm_and_gpt2(**overrides):
    torch.manual_seed(0)
    model = trained_like(GPTForCausalLM(tiny_config(**overrides)))
    return model, model.to_gpt2().eval()


def test_config_defaults_fit_any_vocabulary():
    small = GPTConfig(vocab_size=1000, context_length=16, emb_dim=32, n_heads=2, n_layers=1)
    assert (small.pad_token_id, small.bos_token_id, small.eos_token_id) == (None, None, None)
    model = GPTForCausalLM(small).eval()
    assert model(torch.tensor([[1, 999]])).logits.shape == (1, 2, 1000)
    assert model.generate(torch.tensor([[1, 2]]), max_new_tokens=3, do_sample=False).shape == (1, 5)
    assert GPTConfig(vocab_size=1000, pad_token_id=7).pad_token_id == 7
    for preset in ("gpt2-small", "gpt2-xl"):
        config = GPTConfig.from_preset(preset)
        assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (50256, 50256, 50256)
    with pytest.raises(ValueError, match="eos_token_id 1000 is outside the vocabulary"):
        GPTConfig(vocab_size=1000, eos_token_id=1000)


@pytest.mark.parametrize("head", [GPTForCausalLM, GPTForSequenceClassification])
def test_eager_and_sdpa_give_the_same_outputs(head, tmp_path):
    torch.manual_seed(0)
    model = trained_like(head(tiny_config(pooling="last_non_pad")))
    assert model.config._attn_implementation == "sdpa"
    model.save_pretrained(tmp_path)
    eager = head.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert eager.config._attn_implementation == "eager"
    ids, mask = left_padded(ROWS)
    with torch.no_grad():
        torch.testing.assert_close(eager(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)
    model.set_attn_implementation("eager")  # switched in place, every layer
    assert all(block.att.config._attn_implementation == "eager" for block in model.model.trf_blocks)


def test_eager_attention_weights_match_gpt2_and_sdpa_says_it_has_none(caplog):
    ours, theirs = lm_and_gpt2()
    ids, mask = right_padded(ROWS)
    ours.set_attn_implementation("eager")
    theirs.set_attn_implementation("eager")
    with torch.no_grad():
        mine = ours(ids, attention_mask=mask, output_attentions=True).attentions
        reference = theirs(ids, attention_mask=mask, output_attentions=True).attentions
    assert len(mine) == len(reference) == 2
    real = mask.bool()[:, None, :, None]  # rows of real queries (a pad query attends differently: GPT-2 masks its row)
    for got, expected in zip(mine, reference, strict=True):
        torch.testing.assert_close(got * real, expected * real, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)))
    ours.set_attn_implementation("sdpa")
    logging.enable_propagation()  # transformers' loggers do not reach pytest's handler otherwise
    logging.get_logger("transformers.integrations.sdpa_attention").warning_once.cache_clear()
    with caplog.at_level("WARNING"), torch.no_grad():
        out = ours(ids, attention_mask=mask, output_attentions=True)
    logging.disable_propagation()
    assert out.attentions == (None, None) and "`sdpa` attention does not support `output_attentions=True`" in caplog.text


def test_hidden_states_flags_and_tuples_follow_transformers():
    ours, theirs = lm_and_gpt2()
    ids, mask = right_padded(ROWS)
    with torch.no_grad():
        mine = ours(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        reference = theirs(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        assert len(mine) == len(reference) == 3  # embeddings, block 0, block 1 after the final norm
        real = mask.bool()
        for got, expected in zip(mine, reference, strict=True):
            torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)
        ours.config.output_hidden_states = True  # the config's flag, as in every transformers model
        assert len(ours(ids).hidden_states) == 3
        ours.config.output_hidden_states = False
        plain = ours(ids, return_dict=False)
        assert isinstance(plain, tuple) and torch.equal(plain[0], ours(ids).logits)
        ours.config.return_dict = False
        assert isinstance(ours(ids), tuple)
        classifier = GPTForSequenceClassification(tiny_config()).eval()
        logits, hidden = classifier(ids, attention_mask=mask, output_hidden_states=True, return_dict=False)
        assert logits.shape == (3, 2) and len(hidden) == 3


def test_kv_cache_forward_equals_the_whole_sequence():
    """Prefill a prefix, then feed one token at a time with the cache: the logits of the whole-sequence
    forward, with left padding too."""
    ours, _ = lm_and_gpt2()
    ids, mask = left_padded(ROWS)
    with torch.no_grad():
        whole = ours(ids, attention_mask=mask, use_cache=False).logits
        out = ours(ids[:, :4], attention_mask=mask[:, :4], use_cache=True)
        steps = [out.logits]
        for t in range(4, ids.shape[1]):
            out = ours(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=out.cache)
            steps.append(out.logits)
    assert out.cache.get_seq_length() == ids.shape[1]
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[real], whole[real], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attention_mask covers 1 tokens, but there are 10 cached and 1 new"):
        ours(ids[:, :1], attention_mask=mask[:, :1], cache=out.cache)


def test_greedy_generation_with_the_cache_equals_gpt2_and_no_cache_batched_and_left_padded():
    ours, theirs = lm_and_gpt2(eos_token_id=None, bos_token_id=None)
    ids, mask = left_padded(ROWS)
    settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 50256}
    with torch.no_grad():
        cached = ours.generate(ids, attention_mask=mask, **settings)
        uncached = ours.generate(ids, attention_mask=mask, use_cache=False, **settings)
        reference = theirs.generate(ids, attention_mask=mask, **settings)
        alone = [ours.generate(torch.tensor([row]), **settings)[0, len(row) :] for row in ROWS]
    assert torch.equal(cached, uncached) and torch.equal(cached, reference)
    assert torch.equal(cached[:, ids.shape[1] :], torch.stack(alone))


def test_generate_returns_every_step_and_accepts_inputs_embeds():
    ours, theirs = lm_and_gpt2(eos_token_id=None, bos_token_id=None)
    prompt = torch.tensor([ROWS[0]])
    settings = {"max_new_tokens": 4, "do_sample": False, "return_dict_in_generate": True}
    with torch.no_grad():
        out = ours.generate(prompt, output_hidden_states=True, output_scores=True, output_logits=True, **settings)
        reference = theirs.generate(prompt, output_hidden_states=True, output_scores=True, output_logits=True, **settings)
        assert len(out.hidden_states) == 4 and all(len(step) == 3 for step in out.hidden_states)
        assert [tuple(step[-1].shape) for step in out.hidden_states] == [(1, 6, 64), (1, 1, 64), (1, 1, 64), (1, 1, 64)]
        for mine, expected in zip(out.hidden_states, reference.hidden_states, strict=True):
            torch.testing.assert_close(mine[-1], expected[-1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.stack(out.logits), torch.stack(reference.logits), atol=1e-4, rtol=1e-4)
        embedded = ours.generate(inputs_embeds=ours.get_input_embeddings()(prompt), max_new_tokens=4, do_sample=False)
    assert torch.equal(embedded, out.sequences[:, prompt.shape[1] :])  # from embeddings, generate returns only new tokens


def test_problem_types_are_inferred_and_their_losses_match_gpt2():
    """Regression (MSE), multi-label (BCE with logits) and single-label (cross-entropy), inferred from
    ``num_labels`` and the labels' dtype as transformers does, on the same weights as GPT-2's classifier."""
    ids = torch.tensor([row[:2] for row in ROWS])
    cases = [
        (1, torch.tensor([0.5, -1.0, 2.0]), "regression"),
        (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), "multi_label_classification"),
        (3, torch.tensor([2, 0, 1]), "single_label_classification"),
    ]
    for num_labels, labels, problem in cases:
        torch.manual_seed(0)
        ours = trained_like(GPTForSequenceClassification(tiny_config(num_labels=num_labels)))
        theirs = ours.to_gpt2().eval()
        with torch.no_grad():
            loss = ours(ids, labels=labels).loss
            assert ours.config.problem_type == problem
            torch.testing.assert_close(loss, theirs(ids, labels=labels).loss, atol=1e-5, rtol=1e-5)
        assert ours.to_gpt2().config.problem_type == problem  # an exported model keeps the loss (and the pipeline's function)
    torch.manual_seed(0)
    two_targets = GPTForSequenceClassification(tiny_config(num_labels=2, problem_type="regression"))
    targets = torch.randn(3, 2)
    out = two_targets(ids, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits, targets))


def test_loss_keyword_arguments_of_transformers_are_accepted():
    """``num_items_in_batch`` (a sum over the batch divided by it) and ``shift_labels``, as transformers 5
    passes them; ``accepts_loss_kwargs`` stays off so Trainer keeps averaging per device (see trainer tests)."""
    ours, _ = lm_and_gpt2()
    ids = torch.tensor([row[:6] for row in (ROWS[0], ROWS[2])])
    labels = ids.clone()
    labels[0, 2] = -100
    with torch.no_grad():
        mean = ours(ids, labels=labels).loss
        summed = ours(ids, labels=labels, num_items_in_batch=torch.tensor(7)).loss  # 2 x 5 targets, 1 ignored, +2: any count
        torch.testing.assert_close(summed, mean * 9 / 7)
        shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:].contiguous()
        torch.testing.assert_close(ours(ids, labels=labels, shift_labels=shifted).loss, mean)
        classifier = GPTForSequenceClassification(tiny_config()).eval()
        targets = torch.tensor([0, 1])
        per_example = classifier(ids, labels=targets).loss
        torch.testing.assert_close(classifier(ids, labels=targets, num_items_in_batch=4).loss, per_example * 2 / 4)
    assert GPTForCausalLM.accepts_loss_kwargs is False and GPTForSequenceClassification.accepts_loss_kwargs is False


def count_block_runs(model) -> list[int]:
    runs = []
    for block in model.model.trf_blocks:
        block.norm2.register_forward_hook(lambda *_: runs.append(1))
    return runs


@pytest.mark.parametrize("trainable", ["all", "last_block"])
def test_gradient_checkpointing_recomputes_blocks_with_the_same_loss_and_gradients(trainable):
    """Every block, the one-position top block of the classifier included, is recomputed in the backward
    pass (its norm2 runs twice) and the loss and every gradient are those of the plain backward."""
    from hf_spam.training.model_setup import configure_trainable

    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = configure_trainable(trained_like(GPTForSequenceClassification(tiny_config(n_layers=3))), trainable)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        runs = count_block_runs(model)
        ids, mask = right_padded(ROWS)
        loss = model(ids, attention_mask=mask, labels=torch.tensor([0, 1, 1])).loss
        forward_runs = len(runs)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, forward_runs, len(runs)))
    (plain_loss, plain_grads, _, plain_runs), (loss, grads, forward_runs, runs) = results
    assert plain_runs == forward_runs == 3 and runs == 6
    torch.testing.assert_close(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], atol=1e-6, rtol=1e-5)


def test_gradient_checkpointing_in_the_causal_lm_drops_the_cache_and_keeps_the_loss():
    ours, _ = lm_and_gpt2()
    ids = torch.tensor([ROWS[2]])
    ours.train()
    plain = ours(ids, labels=ids)
    plain.loss.backward()
    expected = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    ours.activation_checkpointing_enable()  # transformers 5.24's name; gradient_checkpointing_enable() above
    out = ours(ids, labels=ids, use_cache=True)
    out.loss.backward()
    assert out.cache is None  # a recomputed block would write its keys and values twice
    torch.testing.assert_close(out.loss, plain.loss)
    for name, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], atol=1e-6, rtol=1e-5)


def test_device_map_auto_offloads_to_cpu_and_disk_with_the_same_logits(tmp_path):
    """accelerate's big-model loading: a memory budget too small for the model puts blocks on disk."""
    torch.manual_seed(0)
    model = trained_like(GPTForCausalLM(tiny_config(vocab_size=1000, n_layers=4, tie_word_embeddings=False)))
    model.save_pretrained(tmp_path / "model")
    offloaded = GPTForCausalLM.from_pretrained(
        tmp_path / "model", device_map="auto", max_memory={"cpu": "700KB"}, offload_folder=str(tmp_path / "offload")
    )
    placements = offloaded.hf_device_map
    assert set(placements.values()) == {"cpu", "disk"}, placements
    assert not any(key.startswith("model.trf_blocks.0.") for key in placements), "a block (_no_split_modules) is never split"
    ids, mask = right_padded([[row % 1000 for row in ids] for ids in ROWS], pad=999)
    with torch.no_grad():
        torch.testing.assert_close(offloaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)


def test_beam_search_and_sampling_match_gpt2():
    ours, theirs = lm_and_gpt2(eos_token_id=None, bos_token_id=None)
    ids, mask = left_padded(ROWS)
    with torch.no_grad():
        beams = [
            m.generate(ids, attention_mask=mask, max_new_tokens=6, num_beams=3, do_sample=False, pad_token_id=50256) for m in (ours, theirs)
        ]
        sampled = []
        for model in (ours, theirs):
            torch.manual_seed(5)
            sampled.append(model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, top_k=50, pad_token_id=50256))
    assert torch.equal(*beams) and torch.equal(*sampled)


@pytest.mark.parametrize("head", [GPTModel, GPTForCausalLM, GPTForSequenceClassification])
def test_embeddings_resize_and_inputs_embeds_and_retained_gradients(head):
    """Three of transformers' common model tests: ``inputs_embeds`` gives the ``input_ids`` output,
    ``resize_token_embeddings`` keeps the LM head tied and trains, and gradients reach retained hidden states
    and (eager) attention weights."""
    torch.manual_seed(0)
    model = head(tiny_config(vocab_size=1000)).eval()
    ids = torch.randint(0, 1000, (2, 7))
    key = "last_hidden_state" if head is GPTModel else "logits"
    with torch.no_grad():
        torch.testing.assert_close(model(inputs_embeds=model.get_input_embeddings()(ids))[key], model(input_ids=ids)[key])
    model.resize_token_embeddings(1010)
    assert model.config.vocab_size == 1010 and model.get_input_embeddings().weight.shape == (1010, 64)
    if head is GPTForCausalLM:
        assert model.out_head.weight is model.model.tok_emb.weight and model(ids).logits.shape == (2, 7, 1010)
    model.set_attn_implementation("eager")
    out = model.train()(input_ids=torch.tensor([[1005, 3, 7]]), output_hidden_states=True, output_attentions=True)
    hidden, attention = out.hidden_states[0], out.attentions[0]
    hidden.retain_grad()
    attention.retain_grad()
    out[key].flatten()[0].backward()
    assert hidden.grad is not None and attention.grad is not None
    assert model.get_input_embeddings().weight.grad[1005].abs().sum() > 0  # a new token's row trains


def test_past_key_values_is_accepted_with_transformers_deprecation_warning_as_gpt2_does():
    model, gpt2 = lm_and_gpt2()
    ids = torch.tensor([[5, 6, 7]])
    for network in (model, gpt2):
        with pytest.warns(FutureWarning, match=r"`past_key_values` is deprecated .* Use `cache` instead"):
            first = network(ids, past_key_values=DynamicCache(config=network.config), use_cache=True)
        assert first.cache.get_seq_length() == 3  # the cache passed under the old name is the one filled
    with pytest.warns(FutureWarning, match="past_key_values"):
        model.model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True)
