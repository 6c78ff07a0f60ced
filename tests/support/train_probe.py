"""``hf-spam train`` with test probes injected from outside the product: a Trainer subclass that
records which examples each process trained on, and a callback that pauses right after a given
checkpoint is saved (so a test can kill the run at a known point without polling).

A third probe slows the frozen prefix down (seconds per batch), so that two runs started together
overlap while one builds the cache; a fourth records how the trained model's parameters are held
(sharded DTensors under FSDP, whole tensors otherwise).

python tests/support/train_probe.py [--probe_record DIR] [--probe_pause_after_save STEP] [--probe_slow_prefix SECONDS]
    [--probe_sharding DIR] <hf-spam train arguments>
"""

import hashlib
import json
import logging
import sys
import time
from pathlib import Path

from transformers import HfArgumentParser, TrainerCallback

from hf_spam.cache import build as cache_build
from hf_spam.training.arguments import DataArguments, ModelArguments
from hf_spam.training.config import SpamTrainingArguments
from hf_spam.training.recipe import run
from hf_spam.training.trainer import SpamTrainer


class RecordingTrainer(SpamTrainer):
    """Fingerprints (sha1 of the unpadded token ids) of every example each training step sees."""

    seen: list[str]

    def training_step(self, model, inputs, num_items_in_batch=None):
        for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist(), strict=True):
            self.seen.append(hashlib.sha1(str([i for i, m in zip(ids, mask, strict=True) if m]).encode()).hexdigest()[:16])
        return super().training_step(model, inputs, num_items_in_batch)


class PauseAfterSave(TrainerCallback):
    """After the checkpoint of ``step`` is complete, say so on stdout and block until stdin closes."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            print(f"saved checkpoint-{self.step}", flush=True)
            sys.stdin.read()


class RecordSharding(TrainerCallback):
    """After the first training step, each process writes rank<N>-sharding.json: per trained parameter, its
    type and the number of elements this process holds."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step != 1:
            return
        held = {
            name: {"type": type(p).__name__, "local": p.to_local().numel() if hasattr(p, "to_local") else p.numel(), "full": p.numel()}
            for name, p in model.named_parameters()
        }
        Path(self.folder, f"rank{args.process_index}-sharding.json").write_text(json.dumps(held))


def take(argv: list[str], flag: str) -> str | None:
    if flag not in argv:
        return None
    index = argv.index(flag)
    value = argv[index + 1]
    del argv[index : index + 2]
    return value


def main() -> None:
    argv = sys.argv[1:]
    record, pause, slow = take(argv, "--probe_record"), take(argv, "--probe_pause_after_save"), take(argv, "--probe_slow_prefix")
    sharding = take(argv, "--probe_sharding")
    if slow:
        prefix = cache_build.prefix
        cache_build.prefix = lambda *args: time.sleep(float(slow)) or prefix(*args)
    model_args, data_args, training_args = HfArgumentParser(
        (ModelArguments, DataArguments, SpamTrainingArguments)
    ).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO if training_args.process_index == 0 else logging.WARNING)
    RecordingTrainer.seen = []
    callbacks = [PauseAfterSave(int(pause))] if pause else []
    callbacks += [RecordSharding(sharding)] if sharding else []
    run(model_args, data_args, training_args, callbacks=callbacks, trainer_class=RecordingTrainer)
    if record:
        Path(record, f"rank{training_args.process_index}.json").write_text(json.dumps(RecordingTrainer.seen))


if __name__ == "__main__":
    main()
