"""Which ``checkpoint-*`` folder a run may resume from, and tidying them away after a run."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from safetensors import safe_open

logger = logging.getLogger(__name__)


def checkpoint_problem(folder: Path, needs_optimizer: bool = True) -> str | None:
    """Why ``folder`` cannot be resumed from (``None`` if it can). ``trainer_state.json`` is written
    last, so a checkpoint killed while saving lacks it or has it truncated."""
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
    try:
        with safe_open(weights, framework="pt") as handle:
            handle.keys()
    except Exception as error:  # safetensors raises its own error types for bad headers
        return f"model.safetensors is unreadable ({error})"
    if needs_optimizer and not (folder / "optimizer.pt").is_file():
        return "no optimizer.pt"
    return None


def checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders in ``output_dir``, newest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def resolve_checkpoint(resume: str | None, output_dir: Path, needs_optimizer: bool = True) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``last`` for the newest complete one in
    ``output_dir``. Incomplete checkpoints are skipped with a message, never loaded."""
    if resume is None:
        return None
    if resume != "last":
        problem = checkpoint_problem(Path(resume), needs_optimizer)
        if problem:
            raise ValueError(f"Cannot resume from {resume}: {problem}. Pass --resume_from_checkpoint last to use the newest complete one.")
        return resume
    for folder in checkpoints(output_dir):
        problem = checkpoint_problem(folder, needs_optimizer)
        if problem is None:
            logger.info("Resuming from %s.", folder)
            return str(folder)
        logger.warning("Skipping %s: %s.", folder, problem)
    logger.warning("No complete checkpoint in %s; training from the start.", output_dir)
    return None


def remove_checkpoints(output_dir: Path) -> None:
    """Delete the ``checkpoint-*`` folders once the final model is saved (each holds a full model and optimizer state)."""
    for folder in checkpoints(output_dir):
        shutil.rmtree(folder)
        logger.info("Removed %s (pass --keep_checkpoints to keep checkpoints).", folder)
