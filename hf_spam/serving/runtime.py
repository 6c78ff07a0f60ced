"""An exported folder (``hf-spam export``) loaded on its runtime and used as the text-classification pipeline is."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import torch

from ..errors import HfSpamError, ModelNotFoundError, OptionError, UnusableModelError
from ..models.gpt.model_checksums import CHECKSUMS_NAME, checksum_problem

BACKENDS = ("torch", "onnx", "openvino")
EXPORT_MANIFEST = "export.json"  # transformers.exporters' manifest, naming the format and the program files
# the packages each exported format needs to be written and run (the [export] extra)
PACKAGES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("openvino",)}
QUANTIZE_PACKAGES = {"onnx": (), "openvino": ("nncf",)}
# the precisions an export computes in (hf-spam export --precision), as OpenVINO's INFERENCE_PRECISION_HINT names them
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class MissingExtraError(HfSpamError, ImportError):
    """An optional package is not installed: the message names it and the extra that installs it."""


class NoNativeBf16Error(OptionError):
    """``--precision bf16`` on a CPU without native bf16, where OpenVINO would compute in float32 instead."""


def openvino_has_native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (AMX or AVX512-BF16): it lists ``BF16`` among the
    CPU's optimization capabilities. Elsewhere it takes a bf16 hint and compiles float32 without a word. OpenVINO's
    own answer rather than the CPU's flags (``hf_spam.benchmark.machine.native_bf16``, for torch): it is OpenVINO that
    decides whether the hint takes."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_compile(folder: Path) -> dict:
    """OpenVINO compile properties for an export: the precision transformers' exporter recorded in the program (``f32``;
    ``bf16`` for a ``--precision bf16`` export), asked for explicitly. Without the hint OpenVINO's CPU plugin runs a
    float32 program in bf16 where the CPU has native bf16, whatever the program records, and its probabilities move by
    ~5e-3."""
    import openvino

    manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
    program = openvino.Core().read_model(str(folder / next(iter(manifest["components"].values()))["file"]))
    key = ["runtime_options", "INFERENCE_PRECISION_HINT"]
    return {"INFERENCE_PRECISION_HINT": program.get_rt_info(key).astype(str) if program.has_rt_info(key) else "f32"}


def require_extra(export_format: str, quantize: str | None = None) -> None:
    """One line naming what is missing and ``pip install "hf_spam[export]"``, before anything is loaded."""
    needed = PACKAGES[export_format] + (QUANTIZE_PACKAGES[export_format] if quantize else ())
    missing = [name for name in needed if not importable(name)]
    if missing:
        raise MissingExtraError(
            f"The {export_format} backend needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            'pip install "hf_spam[export]".'
        )


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def exported_format(folder: str | os.PathLike) -> str | None:
    """The format of an exported folder (``onnx``, ``openvino``), ``None`` for anything else (a run folder, a Hub id)."""
    manifest = Path(folder) / EXPORT_MANIFEST
    if not manifest.is_file():
        return None
    try:
        return str(json.loads(manifest.read_text())["export_format"])
    except (ValueError, KeyError, TypeError) as error:
        raise UnusableModelError(f"{manifest} is not an export manifest ({error}); export the run again with hf-spam export.") from error


def backend_for(name: str, backend: str | None) -> str:
    """The backend a folder runs on: its export's format, ``torch`` for a saved model; a ``backend`` asked for must
    be the folder's (a model is exported once per format, with ``hf-spam export``)."""
    if backend is not None and backend not in BACKENDS:
        raise OptionError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}.")
    found = exported_format(name) if Path(name).is_dir() else None
    actual = found or "torch"
    if backend is not None and backend != actual:
        if found is None:
            raise OptionError(
                f"--backend {backend}: {name} is a PyTorch model, not a {backend} export; "
                f"run hf-spam export {name} --format {backend} --output_dir OUT and classify OUT."
            )
        raise OptionError(f"--backend {backend}: {name} holds a {found} export; give --backend {found} or the folder it came from.")
    return actual


class ExportedClassifier:
    """An exported classifier: ``model`` (transformers' ``ExportedModel``, with its ``config``), ``tokenizer``, and
    called with texts as ``pipeline("text-classification", top_k=None)`` is (every class's score, best first)."""

    def __init__(self, model, tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def __call__(self, texts: str | list[str], batch_size: int = 32, max_length: int | None = None, **_pipeline_options) -> list:
        from .predict import predict_proba

        single = isinstance(texts, str)
        probs = predict_proba(self.model, self.tokenizer, [texts] if single else list(texts), batch_size, max_length)
        id2label = self.model.config.id2label
        ranked = [sorted(enumerate(row), key=lambda item: -item[1]) for row in probs.tolist()]
        results = [[{"label": id2label[i], "score": score} for i, score in row] for row in ranked]
        return results[0] if single else results


def load_exported(
    folder: str | os.PathLike, device: str | int | None = None, shown_as: str | os.PathLike | None = None
) -> ExportedClassifier:
    """An exported folder on its runtime, after checking its files against ``model_checksums.json``: a damaged program
    or weights file would otherwise compute quietly wrong probabilities. ``shown_as``: the folder's name in errors
    (an export checks itself in a staging folder the user never named)."""
    from transformers import AutoTokenizer
    from transformers.exporters import ExportedModel

    from .predict import check_tokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: no such folder; give the --output_dir hf-spam export wrote.")
    export_format = exported_format(folder)
    if export_format is None:
        raise UnusableModelError(f"{folder} has no {EXPORT_MANIFEST}: it is not an exported model; hf-spam export writes one.")
    require_extra(export_format)
    manifest = folder / CHECKSUMS_NAME
    if not manifest.is_file():
        raise UnusableModelError(f"{folder} has no {CHECKSUMS_NAME}: export it again with hf-spam export.")
    locate = lambda name: str(folder / name) if (folder / name).is_file() else None  # noqa: E731
    problem = checksum_problem(manifest, locate, required=(EXPORT_MANIFEST, "config.json", "tokenizer.json"))
    if problem:
        raise UnusableModelError(f"{folder}: {problem}. Export the run again with hf-spam export.")
    device = torch.device(f"cuda:{device}" if isinstance(device, int) else device) if device is not None else None
    try:
        runner = {"config": openvino_compile(folder)} if export_format == "openvino" else {}
        model = ExportedModel.from_pretrained(folder, device=device, trust_remote_code=True, **runner)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise UnusableModelError(f"{shown_as or folder}: {' '.join(str(error).split())}") from error
    except RuntimeError as error:  # OpenVINO's compile refuses a graph it cannot run on this device
        if export_format != "openvino":
            raise
        raise UnusableModelError(
            f"{shown_as or folder}: OpenVINO could not compile this export ({str(error).strip().splitlines()[0][:200]}). "
            "Export the run with --format onnx (ONNX Runtime) instead."
        ) from error
    check_tokenizer(folder, tokenizer, model.config)
    return ExportedClassifier(model, tokenizer)
