"""A saved folder must work where hf_spam is not installed: code, config, weights and tokenizer."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hf_spam import GPTForCausalLM, GPTForSequenceClassification, gpt2_tokenizer, save_with_tokenizer
from hf_spam.models.gpt import SHIPPED_FILES
from tests.helpers import right_padded, tiny_config

FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    sys.modules["hf_spam"] = None  # any 'import hf_spam' now raises ImportError
    try:
        import hf_spam  # noqa: F401
        raise SystemExit("hf_spam was importable")
    except ImportError:
        pass
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    folder, expected = sys.argv[1], torch.load(sys.argv[2], weights_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    assert "transformers_modules" in type(model).__module__, type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(expected["texts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.equal(logits, expected["logits"]), (logits - expected["logits"]).abs().max()
    classify = pipeline("text-classification", model=folder, trust_remote_code=True, top_k=None)
    scores = classify(expected["texts"], batch_size=2)
    probs = expected["logits"].softmax(-1)
    for row, prob in zip(scores, probs):
        by_label = {d["label"]: d["score"] for d in row}
        assert abs(by_label["spam"] - prob[1].item()) < 1e-5, (by_label, prob)
    try:  # the GPT-2 conversion is hf_spam's, not the saved model's: asking for it says so
        type(model).from_gpt2("gpt2")
        raise SystemExit("from_gpt2 ran without hf_spam")
    except ImportError as error:
        assert "needs hf_spam installed" in str(error), error
    print("fresh process OK", type(model).__name__)
    """
)


@pytest.mark.slow
def test_saved_classifier_loads_without_hf_spam(gpt2_bpe, tmp_path):
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(id2label={0: "ham", 1: "spam"})).eval()
    save_with_tokenizer(model, tmp_path / "model")
    files = set(os.listdir(tmp_path / "model"))
    assert files == {"model.safetensors", "config.json", "model_checksums.json", *SHIPPED_FILES, "tokenizer.json", "tokenizer_config.json"}
    assert not any(f.endswith((".bin", ".pth", ".pt")) for f in files)
    auto_map = json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSequenceClassification"] == "modeling_gpt.GPTForSequenceClassification"

    texts = ["Free entry in 2 a wkly comp to win FA Cup final tkts", "Ok lar... Joking wif u oni...", "Hi"]
    batch = gpt2_tokenizer()(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = {"texts": texts, "logits": model(**batch).logits}
    torch.save(expected, tmp_path / "expected.pt")
    (tmp_path / "check.py").write_text(FRESH_PROCESS)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "check.py"), str(tmp_path / "model"), str(tmp_path / "expected.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fresh process OK GPTForSequenceClassification" in result.stdout


def test_causal_lm_round_trips_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    reloaded = GPTForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.out_head.weight is reloaded.model.tok_emb.weight
    prompt = torch.tensor([[15496, 11, 995]])
    with torch.no_grad():  # the reloaded model decodes with its KV cache, as it would without
        cached = reloaded.generate(prompt, max_new_tokens=8, do_sample=False)
        assert torch.equal(cached, reloaded.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False))
    ids, mask = right_padded([[1, 2, 3], [4]])
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, reloaded(ids, attention_mask=mask).logits)
