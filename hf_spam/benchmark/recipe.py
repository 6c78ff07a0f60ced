"""The work unit of the benchmark (chapter 6's recipe on the SMS data) and the FLOPs and memory traffic it cannot avoid."""

from __future__ import annotations

import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..data import load_sms_spam, tokenize
from ..models.gpt.configuration_gpt import GPTConfig
from ..models.gpt.modeling_gpt import GPTForSequenceClassification
from ..models.gpt.pooled_position import prefix
from ..training.model_setup import configure_trainable

FULL_STEPS = 5 * (1045 // 8)
FULL_EXAMPLES = 1045 + 149 + 300
QUICK = {"train": 160, "validation": 80, "test": 80, "steps": 20}


def recipe_flops(data_file: str) -> dict:
    """The FLOPs the book recipe cannot avoid, counted by torch on the meta device, GPT-2 small's blocks.

    Every message at its own length (no padding): embeddings + the 11 frozen blocks once per distinct
    message (a repeated message has the same prefix: 1,388 of the 1,494 are distinct), the last block
    + head forward and backward for the pooled position (its query meeting every position, see
    ``pooled_position.attention_at``) for the 5 x 1,040 trained examples, and the last block + head forward once per message for the final
    accuracies. The optimizer's elementwise work is not a matrix product and is left out (see
    ``train_memory_bytes``).
    """

    # the 11 frozen blocks are alike: torch counts one of them (below a top block) and the prefix is 11 times it;
    # counting every block op by op on the meta device was the slowest part of starting a benchmark
    frozen_blocks = GPTConfig().n_layers - 1
    with torch.device("meta"):
        model = configure_trainable(GPTForSequenceClassification(GPTConfig(num_labels=2, n_layers=2)), "last_block")

    @functools.cache
    def per_message(length: int) -> tuple[int, int, int]:
        ids = torch.zeros(1, length, dtype=torch.long, device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as frozen:
            hidden = prefix(model.model, ids, None, 1)
        top = {"prefix_hidden_states": hidden, "prefix_depth": 1, "input_ids": ids}
        with FlopCounterMode(display=False) as train:
            model(**top, labels=torch.zeros(1, dtype=torch.long, device="meta")).loss.backward()
        with torch.no_grad(), FlopCounterMode(display=False) as evaluate:
            model(**top)
        return frozen_blocks * frozen.get_total_flops(), train.get_total_flops(), evaluate.get_total_flops()

    data = tokenize(load_sms_spam(data_file), "dynamic")
    lengths = {name: [len(ids) for ids in split["input_ids"]] for name, split in data.splits.items()}
    every = [n for split in lengths.values() for n in split]
    distinct = [len(ids) for ids in {tuple(ids) for split in data.splits.values() for ids in split["input_ids"]}]
    train = [per_message(n)[1] for n in lengths["train"]]
    return {
        "prefix": sum(per_message(n)[0] for n in distinct),
        "train": FULL_STEPS * 8 * sum(train) / len(train),
        "evaluate": sum(per_message(n)[2] for n in every),
        "tokens": sum(every),
        # classifying the test messages once, each at its own length: the serving section's FLOP limit
        "classify_test": sum(per_message(n)[0] + per_message(n)[2] for n in lengths["test"]),
    }


def train_memory_bytes(model: torch.nn.Module) -> int:
    """Bytes one training step must move for the trainable parameters, fp32: forward and backward read the
    weights (2), backward writes the gradients (1), fused AdamW reads weight, gradient and both moments and
    writes weight and moments (7). Sizes exceed the caches. (Trainer's gradient norm would read the gradients
    once more; ``SpamTrainer`` takes it only on logging steps, and the benchmark does not log.)"""
    return 10 * 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)
