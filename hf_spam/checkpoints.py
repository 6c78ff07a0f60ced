"""Which ``checkpoint-*`` folder a run may resume from, the manifest that lets it tell, and tidying them away after a run.

Trainer writes a checkpoint's files and nothing that says they are whole: a truncated ``optimizer.pt``
fails deep inside torch, and random bytes inside it load silently and spoil the run. So after each
checkpoint :class:`ChecksumManifest` writes ``hf_spam_checkpoint.json``: every file's size and xxh3-128,
and the names of the parameters that trained. Resuming checks them all before anything is loaded.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
import xxhash
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import TrainerCallback
from transformers.trainer_pt_utils import safe_globals

from .errors import CheckpointError

logger = logging.getLogger(__name__)

MANIFEST = "hf_spam_checkpoint.json"
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state")  # what Trainer loads on resume


def file_digest(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def write_manifest(folder: Path, trainable: list[str]) -> None:
    files = {p.name: {"bytes": p.stat().st_size, "xxh3_128": file_digest(p)} for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    partial = folder / f"{MANIFEST}.partial"
    partial.write_text(json.dumps({"files": files, "trainable_parameters": trainable}, indent=1))
    partial.rename(folder / MANIFEST)


class ChecksumManifest(TrainerCallback):
    """Writes each checkpoint's manifest once Trainer has saved it (after every process has written its files)."""

    def on_save(self, args, state, control, model=None, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every process's rng_state_<rank>.pth is written
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_manifest(folder, trainable_names(model))


def checkpoint_problem(folder: Path, needs_optimizer: bool = True) -> str | None:
    """Why ``folder`` cannot be resumed from (``None`` if it can). ``trainer_state.json`` is written
    last by Trainer, and the manifest after it: a checkpoint killed while saving lacks them or has them
    truncated; one damaged later fails its checksums."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (saving was interrupted)"
    try:
        json.loads(state.read_text())
    except ValueError:
        return "trainer_state.json is truncated"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return "no model.safetensors"
    if needs_optimizer and not (folder / "optimizer.pt").is_file():
        return "no optimizer.pt"
    manifest = folder / MANIFEST
    if manifest.is_file():
        return _manifest_problem(folder, manifest)
    return _loading_problem(folder)


def _manifest_problem(folder: Path, manifest: Path) -> str | None:
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for name, recorded in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != recorded["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, {recorded['bytes']} were saved (truncated or overwritten)"
        if file_digest(path) != recorded["xxh3_128"]:
            return f"{name} does not match its checksum in {MANIFEST} (damaged after it was saved)"
    return None


def _loading_problem(folder: Path) -> str | None:
    """Without a manifest (saved by another tool, or a run killed just before writing it): every file
    Trainer will load must at least load."""
    try:
        with safe_open(folder / "model.safetensors", framework="pt") as handle:
            handle.keys()
    except Exception as error:  # safetensors raises its own error types for bad headers
        return f"model.safetensors is unreadable ({error})"
    for path in sorted(folder.glob("*.pt*")):
        if path.name.startswith(TORCH_FILES):
            try:
                with safe_globals():  # the numpy types Trainer's RNG state holds, as Trainer loads it
                    torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # torch raises several types for a damaged zip/pickle
                return f"{path.name} is unreadable ({type(error).__name__}: {str(error)[:120]})"
    return None


def trainable_mismatch(folder: Path, trainable: list[str]) -> str | None:
    """How the checkpoint's trained parameters differ from this run's (``None``: the same)."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())["trainable_parameters"]
        only_saved, only_here = sorted(set(recorded) - set(trainable)), sorted(set(trainable) - set(recorded))
        if not only_saved and not only_here:
            return None
        shown = [f"{where}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}" for where, names in (("only in the checkpoint", only_saved), ("only in this run", only_here)) if names]
        return f"it trained {len(recorded)} parameter tensors, this run trains {len(trainable)} ({'; '.join(shown)})"
    optimizer = folder / "optimizer.pt"
    if optimizer.is_file():
        groups = torch.load(optimizer, map_location="cpu", weights_only=True)["param_groups"]
        saved = sum(len(group["params"]) for group in groups)
        if saved != len(trainable):
            return f"its optimizer holds {saved} parameter tensors, this run trains {len(trainable)}"
    return None


def checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders in ``output_dir``, newest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def resolve_checkpoint(resume: str | None, output_dir: Path, needs_optimizer: bool = True, trainable: list[str] | None = None) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``last`` for the newest intact one in
    ``output_dir``. Damaged or incomplete checkpoints are skipped with a message (``last``) or refused
    (a named folder), never loaded; one that trained other parameters than ``trainable`` is refused."""
    if resume is None:
        return None
    if resume != "last":
        problem = checkpoint_problem(Path(resume), needs_optimizer)
        if problem:
            raise CheckpointError(
                f"Cannot resume from {resume}: {problem}. Pass --resume_from_checkpoint last to use the newest intact one."
            )
        chosen = Path(resume)
    else:
        chosen = None
        for folder in checkpoints(output_dir):
            problem = checkpoint_problem(folder, needs_optimizer)
            if problem is None:
                chosen = folder
                break
            logger.warning("Skipping %s: %s.", folder, problem)
        if chosen is None:
            logger.warning("No intact checkpoint in %s; training from the start.", output_dir)
            return None
    mismatch = trainable_mismatch(chosen, trainable) if trainable is not None else None
    if mismatch:
        raise CheckpointError(
            f"Cannot resume from {chosen}: {mismatch}. Resume with the --trainable_layers (and LoRA settings) it was "
            "trained with, or start afresh in another --output_dir."
        )
    logger.info("Resuming from %s.", chosen)
    return str(chosen)


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
    """Delete the ``checkpoint-*`` folders once the final model is saved (each holds a full model and optimizer state)."""
    for folder in checkpoints(output_dir):
        shutil.rmtree(folder)
        logger.info("Removed %s (pass --keep_checkpoints to keep checkpoints).", folder)
