"""Who owns an ``--output_dir``, which ``checkpoint-*`` folder a run may resume from, and the manifest that lets it tell.

Trainer writes a checkpoint's files and nothing that says they are whole, or whose they are: a truncated
``optimizer.pt`` fails deep inside torch, random bytes inside it load silently and spoil the run, and a
second run in the same ``--output_dir`` would resume (and rotate away) the first one's checkpoints. So:

- a folder belongs to one run at a time: :func:`claim_output_dir` holds a lock on it for the run's life, refuses
  a folder holding another run's files (``--overwrite_output_dir`` moves the earlier checkpoints into
  ``_earlier_run/`` once, so Trainer's own rotation only ever sees this run's), and refuses to resume into a
  finished run;
- after each checkpoint, :class:`CheckpointManifest` writes ``hf_spam_checkpoint.json`` through the one integrity
  mechanism (``model_checksums``): every file's size and digests, and what the run was (:func:`run_identity`);
- resuming (:func:`resolve_checkpoint`) requires that manifest, checks the files and the identity before anything
  is loaded; a checkpoint without it (saving interrupted, or another tool's) cannot be checked and is not used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
import xxhash
from safetensors.torch import load_file
from transformers import TrainerCallback

from ..errors import CheckpointError, OptionError
from ..models.gpt.model_checksums import CHECKSUMS_NAME, checksum_problem, read_manifest, write_checksums

logger = logging.getLogger(__name__)

MANIFEST = "hf_spam_checkpoint.json"
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state")  # what Trainer loads on resume
# what the model computes, as its config says: a checkpoint of other values cannot be continued
MODEL_FIELDS = (
    "vocab_size",
    "context_length",
    "emb_dim",
    "n_heads",
    "n_layers",
    "drop_rate",
    "qkv_bias",
    "causal",
    "pooling",
    "padded_length",
    "truncation_length",
    "loss_ignore_index",
    "problem_type",
)
# the training options that make two runs different runs (epochs and steps are not: a run may be extended)
RECIPE_FIELDS = (
    "seed",
    "learning_rate",
    "weight_decay",
    "weight_decay_scope",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "lr_scheduler_type",
    "warmup_steps",
    "max_grad_norm",
    "optim",
)
# what a resumed run must share with the checkpoint, and how the error names it
MUST_MATCH = {
    "id2label": "classes (--label_names, or the labels in the data)",
    "model": "model config (--config_overrides, --pooling, --padding, --context_length, --max_length)",
    "trainable_parameters": "trained parameters (--trainable_layers, LoRA settings)",
    "data": "data (the texts and labels of its splits)",
}


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def data_fingerprint(splits) -> str:
    """xxh3-128 of every split's name, texts and labels, in order: the same data gives the same fingerprint in any process."""
    digest = xxhash.xxh3_128()
    for name, split in splits.items():
        digest.update(f"\0split {name} {len(split)}\0".encode())
        for text in split["text"]:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(json.dumps(list(split["label"])).encode())
    return digest.hexdigest()


def run_identity(model: torch.nn.Module, args, data: str | None = None) -> dict:
    """What a checkpoint records of its run: the values :data:`MUST_MATCH` names (``data`` is
    :func:`data_fingerprint`, ``None`` if unknown) and the recipe (:data:`RECIPE_FIELDS`) that tells this
    run's checkpoints from another run's in the same folder."""
    config = model.config
    identity = {
        "id2label": {str(k): v for k, v in sorted(config.id2label.items())},
        "model": {field: getattr(config, field, None) for field in MODEL_FIELDS},
        "trainable_parameters": trainable_names(model),
        "data": data,
        "recipe": {field: _enum_value(getattr(args, field, None)) for field in RECIPE_FIELDS},
    }
    return json.loads(json.dumps(identity))  # as a manifest holds it, so that the two compare equal


def _enum_value(value):
    return getattr(value, "value", value)  # TrainingArguments holds some choices as enums


def write_manifest(folder: Path, identity: dict) -> None:
    """``hf_spam_checkpoint.json`` for a complete checkpoint: every file's size and digests, and the run's identity."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    write_checksums(folder, names, manifest=MANIFEST, extra=identity)


class CheckpointManifest(TrainerCallback):
    """Writes each checkpoint's manifest once every process has written its files (Trainer's ``on_save``)."""

    def __init__(self, identity: dict) -> None:
        self.identity = identity

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every process's rng_state_<rank>.pth is written
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if args.should_save and folder.is_dir():
            write_manifest(folder, self.identity)


def checkpoint_problem(folder: Path, needs_optimizer: bool = True) -> str | None:
    """Why ``folder`` cannot be resumed from (``None`` if it can): :func:`_incomplete`, then its files against its
    manifest; every file Trainer loads must be in the manifest (one added later, another run's ``optimizer.pt``,
    is not trusted)."""
    problem = _incomplete(folder, needs_optimizer)
    if problem:
        return problem
    if not (folder / MANIFEST).is_file():
        return f"it has no {MANIFEST} (saving was interrupted before it, or another tool wrote it), so its files cannot be checked"
    files = (read_manifest(folder / MANIFEST) or {}).get("files")
    loaded = [p.name for p in folder.iterdir() if p.is_file() and (p.name == "model.safetensors" or p.name.startswith(TORCH_FILES))]
    unrecorded = sorted(set(loaded) - set(files)) if isinstance(files, dict) else []
    if unrecorded:
        return f"{unrecorded[0]} is not in {MANIFEST} (added after the checkpoint was saved)"
    return checksum_problem(folder / MANIFEST, lambda name: folder / name if (folder / name).is_file() else None)


def _incomplete(folder: Path, needs_optimizer: bool) -> str | None:
    """What a checkpoint lacks (``None``: nothing). ``trainer_state.json`` is written last by Trainer, and the
    manifest after it: a checkpoint killed while saving lacks them or has them truncated."""
    if not folder.is_dir():
        return "no such folder"
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (saving was interrupted)"
    try:
        json.loads(state.read_text())
    except ValueError:
        return "trainer_state.json is truncated"
    if not (folder / "model.safetensors").is_file():
        return "no model.safetensors"
    if needs_optimizer and not (folder / "optimizer.pt").is_file():
        return "no optimizer.pt"
    return None


def _other_run(manifest: dict, identity: dict) -> str | None:
    """How the checkpoint's recipe differs from this run's (``None``: the same run, or a manifest too old to say)."""
    recorded = manifest.get("recipe")
    if not isinstance(recorded, dict):
        return None
    differs = [f"{k} {recorded.get(k)!r} there, {v!r} here" for k, v in identity["recipe"].items() if k in recorded and recorded[k] != v]
    return "; ".join(differs) or None


def _mismatch(manifest: dict, identity: dict) -> str | None:
    """What the checkpoint and this run disagree on, among :data:`MUST_MATCH` (``None``: nothing)."""
    differences = []
    for key, what in MUST_MATCH.items():
        saved, here = manifest.get(key), identity.get(key)
        if saved is None or here is None or saved == here:
            continue
        if key == "trainable_parameters":
            only_saved, only_here = sorted(set(saved) - set(here)), sorted(set(here) - set(saved))
            shown = [
                f"{where}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                for where, names in (("only in the checkpoint", only_saved), ("only in this run", only_here))
                if names
            ]
            differences.append(f"it trained {len(saved)} parameter tensors, this run trains {len(here)} ({'; '.join(shown)})")
        elif key == "data":
            differences.append(f"its {what} differ from this run's")
        else:
            fields = sorted(k for k in set(saved) | set(here) if saved.get(k) != here.get(k)) if key == "model" else None
            if fields:
                differences.append(
                    f"its {what} has {', '.join(f'{k}={saved.get(k)!r}' for k in fields)}, this run "
                    f"{', '.join(f'{k}={here.get(k)!r}' for k in fields)}"
                )
            else:
                differences.append(f"its {what} are {list(saved.values())}, this run's {list(here.values())}")
    return "; ".join(differences) or None


def checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders in ``output_dir``, newest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def finished(output_dir: Path) -> bool:
    """A finished run is in ``output_dir``: its model (``model_checksums.json`` is written after the model's files) and
    its ``all_results.json`` (written after the model)."""
    return (output_dir / CHECKSUMS_NAME).is_file() and (output_dir / "all_results.json").is_file()


def resolve_checkpoint(resume: str | None, output_dir: Path, needs_optimizer: bool = True, identity: dict | None = None) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``last`` for the newest intact checkpoint in ``output_dir``,
    which must be this run's (``identity``, :func:`run_identity`). ``last`` skips, with a message, damaged or incomplete
    checkpoints (a run killed while saving), trains from the start when none is left, and refuses a folder whose
    checkpoints another run wrote. A named folder is refused if it cannot be checked. Either way a checkpoint that
    disagrees with this run on its classes, model, trained parameters or data is an error."""
    if resume is None:
        return None
    if resume != "last":
        chosen = Path(resume)
        problem = checkpoint_problem(chosen, needs_optimizer)
        if problem:
            raise CheckpointError(
                f"Cannot resume from {resume}: {problem}. Pass --resume_from_checkpoint last to use the newest intact one."
            )
    else:
        chosen = _last(output_dir, needs_optimizer, identity)
        if chosen is None:
            logger.warning("No intact checkpoint in %s; training from the start.", output_dir)
            return None
    mismatch = _mismatch(read_manifest(chosen / MANIFEST) or {}, identity) if identity is not None else None
    if mismatch:
        raise CheckpointError(
            f"Cannot resume from {chosen}: {mismatch}. Resume with the options and data it was trained with, or start afresh "
            "in another --output_dir."
        )
    logger.info("Resuming from %s.", chosen)
    return str(chosen)


def _last(output_dir: Path, needs_optimizer: bool, identity: dict | None) -> Path | None:
    for folder in checkpoints(output_dir):
        manifest = read_manifest(folder / MANIFEST)
        other = _other_run(manifest, identity) if manifest is not None and identity is not None else None
        if other:
            raise CheckpointError(
                f"Cannot resume in --output_dir {output_dir}: {folder.name} was written by another run ({other}). Resume with that "
                "run's options, or choose another --output_dir (--overwrite_output_dir true moves its checkpoints aside)."
            )
        reason = checkpoint_problem(folder, needs_optimizer)
        if reason is None:
            return folder
        logger.warning("Skipping %s: %s.", folder, reason)
    return None


def load_checkpoint_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """The checkpoint's weights into ``model`` before anything is computed from them (the frozen-prefix
    cache): Trainer loads them only when training starts. The same tensors it then loads again."""
    path = Path(folder) / "model.safetensors"
    result = model.load_state_dict(load_file(path), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit this model (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}): "
            "resume with the model settings (--config_overrides, --model_name_or_path) it was trained with."
        )


def remove_checkpoints(output_dir: Path) -> None:
    """Delete the ``checkpoint-*`` folders (each holds a full model and optimizer state): all are this run's."""
    for folder in checkpoints(output_dir):
        shutil.rmtree(folder)
        logger.info("Removed %s (pass --keep_checkpoints to keep checkpoints).", folder)


EARLIER_RUN = "_earlier_run"  # a leading underscore: Trainer's Hub push leaves it out


@contextlib.contextmanager
def claim_output_dir(output_dir: Path, *, overwrite: bool, resume: str | None, main_process: bool = True) -> Iterator[None]:
    """The run's hold on ``output_dir`` for as long as it runs: a lock (a second run on the same folder is refused
    at once, instead of both finishing and one silently replacing the other's files), and the folder's ownership
    settled once. A run writes into an empty (or new) folder, or one it resumes (:func:`resolve_checkpoint` then
    checks whose checkpoints are there) unless that holds a finished run (there is nothing to resume, and its model
    would be replaced); ``--overwrite_output_dir`` writes into any, once its ``checkpoint-*``
    folders are moved into ``_earlier_run/``, so that Trainer's rotation and clean-up only ever see this run's.

    The lock is the kernel's ``flock`` on the folder itself: no file is left in it, and a killed run holds nothing.
    Only the main process takes it; the others run inside the same claim."""
    if not main_process:
        yield
        return
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    handle = os.open(output_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OptionError(
                f"--output_dir {output_dir} is in use by another run (hf-spam train) still running; wait for it, or choose "
                "another --output_dir."
            ) from None
        entries = sorted(p.name for p in output_dir.iterdir())
        if resume is not None and not overwrite and finished(output_dir):
            raise OptionError(
                f"--output_dir {output_dir} holds a finished run (its model and all_results.json): there is nothing to resume, and "
                "resuming would replace its model. Choose another --output_dir, or --overwrite_output_dir true to train a new run there."
            )
        if entries and not overwrite and resume is None:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise OptionError(
                f"--output_dir {output_dir} is not empty ({shown}). Choose another --output_dir, pass --resume_from_checkpoint "
                "last to continue the run saved there, or --overwrite_output_dir true to write this run into it anyway (its model "
                f"files are replaced; its checkpoints are moved into {EARLIER_RUN}/)."
            )
        if overwrite:
            _move_checkpoints_aside(output_dir)
        try:
            yield
        finally:
            if created and not any(output_dir.iterdir()):
                output_dir.rmdir()  # a run that failed before writing anything leaves nothing behind
    finally:
        os.close(handle)  # releases the lock


def _move_checkpoints_aside(output_dir: Path) -> None:
    found = checkpoints(output_dir)
    if not found:
        return
    target, n = output_dir / EARLIER_RUN, 1
    while target.exists():
        n += 1
        target = output_dir / f"{EARLIER_RUN}-{n}"
    target.mkdir()
    for folder in found:
        folder.rename(target / folder.name)
    logger.warning("Moved %s into %s: --overwrite_output_dir writes this run where they were.", ", ".join(f.name for f in found), target)
