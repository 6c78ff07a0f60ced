"""Which ``checkpoint-*`` folder a run may resume from, the manifest that lets it tell, and which ones it may delete.

Trainer writes a checkpoint's files and nothing that says they are whole, or whose they are: a truncated
``optimizer.pt`` fails deep inside torch, random bytes inside it load silently and spoil the run, and a
second run in the same ``--output_dir`` resumes (and rotates away) the first one's checkpoints. So after
each checkpoint hf_spam writes ``hf_spam_checkpoint.json``: every file's size and xxh3-128, and what the
run was (:func:`run_identity`: its classes, model, trained parameters, data and recipe). Resuming checks
the files and the identity before anything is loaded; rotation and clean-up delete only this run's.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
import xxhash
from safetensors.torch import load_file
from transformers.trainer_pt_utils import safe_globals

from ..errors import CheckpointError, OptionError
from ..models.gpt.model_checksums import file_checksums

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


def file_digest(path: Path) -> str:
    return file_checksums(path, ("xxh3_128",))["xxh3_128"]


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
    """``hf_spam_checkpoint.json`` for a complete checkpoint: every file's size and xxh3-128, and the run's identity."""
    files = {
        p.name: {"bytes": p.stat().st_size, "xxh3_128": file_digest(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    partial = folder / f"{MANIFEST}.partial"
    partial.write_text(json.dumps({"files": files, **identity}, indent=1))
    partial.rename(folder / MANIFEST)


def read_manifest(folder: Path) -> dict | None:
    """The checkpoint's manifest, ``None`` when it has none or it cannot be read."""
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def checkpoint_problem(folder: Path, needs_optimizer: bool = True) -> str | None:
    """Why ``folder`` cannot be resumed from (``None`` if it can): :func:`_incomplete`, then its files against its
    manifest; every file Trainer loads must be in the manifest (one added later, another run's ``optimizer.pt``,
    is not trusted). Without a manifest, every file must at least load and hold finite numbers."""
    problem = _incomplete(folder, needs_optimizer)
    if problem:
        return problem
    if (folder / MANIFEST).is_file():
        return _manifest_problem(folder)
    return _loading_problem(folder)


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


def _manifest_problem(folder: Path) -> str | None:
    manifest = read_manifest(folder)
    try:
        files = dict(manifest["files"])
    except (KeyError, TypeError, ValueError):
        return f"{MANIFEST} is unreadable"
    loaded = [p.name for p in folder.iterdir() if p.is_file() and (p.name == "model.safetensors" or p.name.startswith(TORCH_FILES))]
    unrecorded = sorted(set(loaded) - set(files))
    if unrecorded:
        return f"{unrecorded[0]} is not in {MANIFEST} (added after the checkpoint was saved)"
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
    Trainer will load must at least load, and hold finite numbers (random bytes in a float often do not)."""
    try:
        weights = load_file(folder / "model.safetensors")
    except Exception as error:  # safetensors raises its own error types for bad headers
        return f"model.safetensors is unreadable ({error})"
    if any(t.is_floating_point() and not torch.isfinite(t).all() for t in weights.values()):
        return "model.safetensors holds NaN or infinite weights"
    for path in sorted(folder.glob("*.pt*")):
        if path.name.startswith(TORCH_FILES):
            try:
                with safe_globals():  # the numpy types Trainer's RNG state holds, as Trainer loads it
                    state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # torch raises several types for a damaged zip/pickle
                return f"{path.name} is unreadable ({type(error).__name__}: {str(error)[:120]})"
            if not all(torch.isfinite(t).all() for t in _float_tensors(state)):
                return f"{path.name} holds NaN or infinite values"
    return None


def _float_tensors(value):
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _float_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _float_tensors(item)


def _other_run(manifest: dict, identity: dict) -> str | None:
    """How the checkpoint's recipe differs from this run's (``None``: the same run, or a manifest too old to say)."""
    recorded = manifest.get("recipe")
    if not isinstance(recorded, dict):
        return None
    differs = [f"{k} {recorded.get(k)!r} there, {v!r} here" for k, v in identity["recipe"].items() if k in recorded and recorded[k] != v]
    return "; ".join(differs) or None


def _mismatch(manifest: dict | None, folder: Path, identity: dict) -> str | None:
    """What the checkpoint and this run disagree on, among :data:`MUST_MATCH` (``None``: nothing)."""
    if manifest is None:  # saved without a manifest: its optimizer state tells how many tensors it trained
        optimizer = folder / "optimizer.pt"
        trainable = identity["trainable_parameters"]
        if optimizer.is_file():
            groups = torch.load(optimizer, map_location="cpu", weights_only=True)["param_groups"]
            saved = sum(len(group["params"]) for group in groups)
            if saved != len(trainable):
                return f"its optimizer holds {saved} parameter tensors, this run trains {len(trainable)}"
        return None
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


def resolve_checkpoint(resume: str | None, output_dir: Path, needs_optimizer: bool = True, identity: dict | None = None) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``last`` for the newest intact one of this run in
    ``output_dir``. ``last`` skips, with a message, damaged or incomplete checkpoints, those without a manifest
    (their files cannot be checked) and those of another run (another recipe); a named folder is refused if
    damaged, and accepted without a manifest with a warning. Either way a checkpoint that disagrees with this
    run (``identity``, :func:`run_identity`) on its classes, model, trained parameters or data is an error."""
    if resume is None:
        return None
    if resume != "last":
        chosen = Path(resume)
        problem = checkpoint_problem(chosen, needs_optimizer)
        if problem:
            raise CheckpointError(
                f"Cannot resume from {resume}: {problem}. Pass --resume_from_checkpoint last to use the newest intact one."
            )
        if read_manifest(chosen) is None:
            logger.warning(
                "%s has no %s: its files could not be checked against what was saved (they load, and hold finite numbers).",
                chosen,
                MANIFEST,
            )
    else:
        chosen = _last(output_dir, needs_optimizer, identity)
        if chosen is None:
            logger.warning("No intact checkpoint of this run in %s; training from the start.", output_dir)
            return None
    mismatch = _mismatch(read_manifest(chosen), chosen, identity) if identity is not None else None
    if mismatch:
        raise CheckpointError(
            f"Cannot resume from {chosen}: {mismatch}. Resume with the options and data it was trained with, or start afresh "
            "in another --output_dir."
        )
    logger.info("Resuming from %s.", chosen)
    return str(chosen)


def _last(output_dir: Path, needs_optimizer: bool, identity: dict | None) -> Path | None:
    for folder in checkpoints(output_dir):
        manifest = read_manifest(folder)
        if manifest is None:
            reason = _incomplete(folder, needs_optimizer) or (
                f"no {MANIFEST}, so its files cannot be checked (name it in --resume_from_checkpoint to resume from it anyway)"
            )
        else:
            other = _other_run(manifest, identity) if identity is not None else None
            reason = f"written by another run ({other})" if other else checkpoint_problem(folder, needs_optimizer)
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


def own_checkpoints(output_dir: Path, identity: dict) -> list[Path]:
    """This run's ``checkpoint-*`` folders (their manifest records this identity), newest first."""
    own = []
    for folder in checkpoints(output_dir):
        manifest = read_manifest(folder)
        if manifest is not None and all(manifest.get(key) == value for key, value in identity.items()):
            own.append(folder)
    return own


def move_aside(folder: Path, identity: dict) -> None:
    """Before this run saves ``folder`` (``checkpoint-<step>``): if another run's checkpoint is there, rename it
    ``checkpoint-<step>.another-run[-N]`` so that Trainer does not write into it; this run's own is left to be replaced."""
    if folder in own_checkpoints(folder.parent, identity):
        return
    target, n = folder.with_name(f"{folder.name}.another-run"), 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.another-run-{n}")
    folder.rename(target)
    logger.warning(
        "Moved %s to %s: it is not a complete checkpoint of this run (another run's, or one interrupted while saving), "
        "and this run saves a checkpoint of the same step.",
        folder,
        target.name,
    )


def rotate_checkpoints(output_dir: Path, identity: dict, limit: int | None, best: str | None) -> None:
    """Trainer's ``save_total_limit`` rotation over this run's checkpoints only (Trainer's own deletes every
    ``checkpoint-*`` in the folder): the newest and the best are kept, each deletion is logged."""
    if not limit or limit <= 0:
        return
    own = own_checkpoints(output_dir, identity)
    protected = {own[0]} if own else set()
    if best is not None:
        protected.add(Path(best))
    excess = len(own) - max(limit, len(protected))
    for folder in reversed(own):  # oldest first
        if excess <= 0:
            break
        if folder not in protected:
            shutil.rmtree(folder)
            logger.info("Removed %s (--save_total_limit %d).", folder, limit)
            excess -= 1


def remove_checkpoints(output_dir: Path, identity: dict, keep: str | None = None) -> None:
    """Delete this run's ``checkpoint-*`` folders (each holds a full model and optimizer state) but ``keep``;
    another run's are left where they are, and said so."""
    own = own_checkpoints(output_dir, identity)
    for folder in own:
        if keep is None or folder != Path(keep):
            shutil.rmtree(folder)
            logger.info("Removed %s (pass --keep_checkpoints to keep checkpoints).", folder)
    others = [folder.name for folder in checkpoints(output_dir) if folder not in own]
    if others:
        logger.info("Kept %s in %s: not written by this run.", ", ".join(others), output_dir)


def check_output_dir(output_dir: Path, *, overwrite: bool, resuming: bool) -> None:
    """A run writes into an empty (or new) ``--output_dir``, or into one it resumes: another run's model and
    checkpoints are not overwritten by accident (as ``run_classification.py``'s ``--overwrite_output_dir``)."""
    if overwrite or resuming or not output_dir.is_dir():
        return
    entries = sorted(p.name for p in output_dir.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise OptionError(
            f"--output_dir {output_dir} is not empty ({shown}). Choose another --output_dir, pass --resume_from_checkpoint "
            "last to continue the run saved there, or --overwrite_output_dir true to write this run into it anyway (its model "
            "files are replaced; checkpoints another run wrote are kept)."
        )
