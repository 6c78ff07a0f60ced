"""``hf-spam export``: a finetuned classifier through transformers' own exporters (``transformers.exporters``), so
it runs on ONNX Runtime or OpenVINO without PyTorch's per-operator overhead, optionally with int8 weights, or in bf16
on OpenVINO where the CPU computes bf16 natively.

The exported folder holds the program (``export.json`` names its files), the config, the tokenizer, a model card
section saying how it was made, and ``model_checksums.json`` over all of them. Before the folder is put in place,
the export is run on a few texts and compared with the float32 PyTorch model it came from: a float32 export whose
probabilities differ by more than :data:`FP32_TOLERANCE` is refused, a bf16 one past :data:`BF16_TOLERANCE`; an int8
one's difference is recorded in its card.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import OptionError, UnusableModelError, disk_errors
from ..models.gpt.model_checksums import checked_files, write_checksums
from .classifier import load_classifier
from .predict import predict_proba, token_limit
from .runtime import EXPORT_MANIFEST, PRECISIONS, NoNativeBf16Error, exported_format, load_exported, openvino_has_native_bf16, require_extra

EXPORT_FORMATS = ("onnx", "openvino")
QUANTIZATIONS = ("int8",)
# the largest |probability difference| an fp32 export may show against PyTorch on the check texts
FP32_TOLERANCE = 1e-4
# the same for a bf16 export (8 bits of mantissa): the measurements behind it are in docs/serving.md
BF16_TOLERANCE = 0.05
NUMBERS = {"fp32": "float32", "bf16": "bf16"}  # each precision as the command's line and the card name it
CHECK_TEXTS = (
    "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward!",
    "Ok lar... Joking wif u oni...",
    "Nah I don't think he goes to usf, he lives around here though",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121 to receive entry question",
    "",
    "U dun say so early hor... U c already then say...",
)


def export_classifier(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    export_format: str = "onnx",
    quantize: str | None = None,
    precision: str = "fp32",
) -> dict:
    """Export the classifier saved in ``model_dir`` (a folder ``hf-spam train`` wrote, or a Hub id) to ``output_dir``,
    which must not hold anything yet (an export never replaces files it did not write). ``precision`` ``bf16``: OpenVINO
    computing in bf16, on a CPU with native bf16. Returns what the export measured:
    ``seconds``, ``bytes`` (the program's files), and ``max_abs_prob_diff`` / ``labels_agree`` against the float32
    PyTorch model on :data:`CHECK_TEXTS`, also written to the folder's card."""
    check_options(model_dir, output_dir, export_format, quantize, precision)
    require_extra(export_format, quantize)
    if precision == "bf16" and not openvino_has_native_bf16():
        raise NoNativeBf16Error(
            "--precision bf16: this CPU has no native bf16 (no AMX or AVX512-BF16), and OpenVINO would compute the export in "
            "float32 here, so it could not be checked at bf16. Export on a CPU that has it (recent Xeons), or leave "
            "--precision out (float32; --quantize int8 is the fast path here)."
        )
    classifier = load_classifier(model_dir)
    model, tokenizer = classifier.model.float().eval(), classifier.tokenizer
    output = Path(output_dir)
    with disk_errors(output, "--output_dir", "nothing was written"):  # a full or read-only disk: one line, exit 74
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        try:
            start = time.perf_counter()
            exported = export_program(model, tokenizer, export_format, quantize, precision)
            seconds = time.perf_counter() - start
            exported.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            programs = program_files(staging)
            program_bytes = sum((staging / name).stat().st_size for name in programs)
            write_checksums(staging, names=sorted({*programs, EXPORT_MANIFEST, *checked_files(staging)}))
            check = compare_with_torch(model, tokenizer, load_exported(staging, shown_as=output).model)
            report = {"format": export_format, "quantize": quantize, "precision": precision, "seconds": seconds, "bytes": program_bytes}
            report |= check
            refuse_a_wrong_export(report, model_dir)
            write_card(staging, output, model_dir, report)
            staging.replace(output)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return report


def check_options(
    model_dir: str | os.PathLike, output_dir: str | os.PathLike, export_format: str, quantize: str | None, precision: str = "fp32"
) -> None:
    if export_format not in EXPORT_FORMATS:
        raise OptionError(f"--format {export_format}: choose one of {', '.join(EXPORT_FORMATS)}.")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise OptionError(f"--quantize {quantize}: choose {', '.join(QUANTIZATIONS)} (or leave it out for float32).")
    if precision not in PRECISIONS:
        raise OptionError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}.")
    if precision == "bf16" and export_format != "openvino":
        raise OptionError(
            "--precision bf16: ONNX Runtime's CPU provider has no bf16 kernel for the model's MatMul; "
            "give --format openvino with it, or --quantize int8 for ONNX Runtime."
        )
    if precision == "bf16" and quantize:
        raise OptionError("--precision bf16 --quantize int8: each is a way to a faster model with its own check; choose one.")
    already = exported_format(model_dir) if Path(model_dir).is_dir() else None
    if already:
        raise OptionError(f"{model_dir} is already an {already} export; give the folder hf-spam train wrote.")
    output = Path(output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OptionError(f"--output_dir {output} already exists and is not an empty folder; give a new one (an export replaces nothing).")


def sample_inputs(tokenizer, limit: int) -> dict[str, torch.Tensor]:
    """What the program is traced with: two texts of different lengths, padded, so that no axis is traced at size 1
    (torch.export would specialize it) and the sequence axis stays within what the model reads."""
    length = max(2, min(7, limit - 1))
    ids = [[464] * length, [464] * (length - 1) + [tokenizer.eos_token_id]]
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor([[1] * length, [1] * (length - 1) + [0]])}


def export_program(model, tokenizer, export_format: str, quantize: str | None, precision: str = "fp32"):
    """The transformers exporter's ``ExportedModel``: batch and sequence axes dynamic (``Dim.DYNAMIC``, which fails
    the export rather than fix an axis to the sample's size); int8 is ONNX Runtime's dynamic quantization (int8
    weights, activations quantized at run time) or NNCF's int8 weight compression for OpenVINO. bf16 is the float32
    program with bf16 recorded as its inference precision (where transformers' exporter records a model's own), which
    :func:`~hf_spam.serving.runtime.openvino_compile` compiles with: OpenVINO converts the weights when it compiles.
    Not a bf16 copy of the model: the exporter traces one with float32 placeholders for its ``nn.Linear`` weights,
    which the one-position top block reads directly (``pooled_position.attention_at``), and its program computed
    probabilities 0.47 away from the model's."""
    from torch.export import Dim
    from transformers import exporters

    inputs = sample_inputs(tokenizer, token_limit(model.config))
    dynamic = {"dynamic_shapes": {name: {0: Dim.DYNAMIC, 1: Dim.DYNAMIC} for name in inputs}}
    if export_format == "onnx":
        quantizer = exporters.OnnxRuntimeQuantizer(exporters.OnnxRuntimeDynamicConfig()) if quantize else None
        return exporters.OnnxExporter().export(model, inputs, exporters.OnnxConfig(**dynamic, quantizer=quantizer))
    quantizer = None
    if quantize:
        import nncf

        quantizer = exporters.NNCFOpenVINOQuantizer(exporters.NNCFWeightCompressionConfig(mode=nncf.CompressWeightsMode.INT8_ASYM))
    exported = exporters.OpenVINOExporter().export(model, inputs, exporters.OpenVINOConfig(**dynamic, quantizer=quantizer))
    exported.program.set_rt_info(PRECISIONS[precision], ["runtime_options", "INFERENCE_PRECISION_HINT"])
    return exported


def program_files(folder: Path) -> list[str]:
    """The files of the programs the export's manifest names (with their weights files)."""
    from transformers.exporters.auto import get_exporter_class

    manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
    exporter = get_exporter_class(manifest["export_format"])
    return [name for entry in manifest["components"].values() for name in exporter.program_files(entry["file"])]


def compare_with_torch(model, tokenizer, exported) -> dict:
    """The export against the model it came from, on :data:`CHECK_TEXTS`."""
    texts = list(CHECK_TEXTS)
    reference = predict_proba(model, tokenizer, texts)
    probs = predict_proba(exported, tokenizer, texts)
    return {
        "max_abs_prob_diff": (probs - reference).abs().max().item(),
        "labels_agree": bool((probs.argmax(-1) == reference.argmax(-1)).all()),
    }


def refuse_a_wrong_export(report: dict, model_dir) -> None:
    """A float32 export computes what PyTorch computes, a bf16 one within bf16's rounding (so a label can change only
    where PyTorch's own answer is that close to a tie); one that does not is a broken export, not a faster model.
    int8's difference is the user's trade, recorded in the card."""
    if report["quantize"]:
        return
    tolerance = BF16_TOLERANCE if report["precision"] == "bf16" else FP32_TOLERANCE
    if report["max_abs_prob_diff"] > tolerance:
        name = f"{report['format']}{' bf16' if report['precision'] == 'bf16' else ''}"
        raise UnusableModelError(
            f"{model_dir}: the {name} export's probabilities differ from PyTorch's by {report['max_abs_prob_diff']:.2g} "
            f"(more than {tolerance}); nothing was written. Report it with the model's config.json."
        )


OPENVINO_NOTES = {
    "fp32": "hf_spam compiles it with OpenVINO's `INFERENCE_PRECISION_HINT` f32 (activations in float32 on every CPU; "
    "OpenVINO would otherwise run it in bf16 on CPUs with native bf16).\n\n",
    "bf16": "hf_spam compiles it with OpenVINO's `INFERENCE_PRECISION_HINT` bf16 (the CPU's AMX or AVX512-BF16 units; its "
    "weights are stored in float32 and converted when it compiles). On a CPU without native bf16 OpenVINO computes it in "
    f"float32, as the model itself. Refused at export past {BF16_TOLERANCE} of probability.\n\n",
}


def write_card(folder: Path, output: Path, model_dir, report: dict) -> None:
    """A README (model card) section saying what the folder holds, how it was made and how to use it."""
    from importlib.metadata import version

    packages = ["torch", "transformers"] + (["onnx", "onnxscript", "onnxruntime"] if report["format"] == "onnx" else ["openvino"])
    quantizer = "ONNX Runtime dynamic quantization" if report["format"] == "onnx" else "NNCF weight compression"
    precision = f"int8 weights ({quantizer})" if report["quantize"] else NUMBERS[report["precision"]]
    command = f"hf-spam export {model_dir} --output_dir {output} --format {report['format']}"
    command += " --quantize int8" if report["quantize"] else " --precision bf16" if report["precision"] == "bf16" else ""
    card = f"""---
library_name: transformers
tags: [hf_spam, text-classification, {report["format"]}]
---

# Exported classifier ({report["format"]}, {precision})

Exported from `{model_dir}` by `{command}`
with transformers' exporters (`transformers.exporters`), dynamic batch and sequence axes.
Versions: {", ".join(f"{name} {version(name)}" for name in packages)}.

{OPENVINO_NOTES[report["precision"]] if report["format"] == "openvino" else ""}\
Checked at export against the PyTorch model on {len(CHECK_TEXTS)} texts: largest probability difference \
{report["max_abs_prob_diff"]:.2g}, labels {"identical" if report["labels_agree"] else "NOT identical"}.

Use it without the run folder:

```
hf-spam classify {output} "See you at 5?"
```

or in Python: `hf_spam.load_classifier("{output}")("See you at 5?")`.
"""
    (folder / "README.md").write_text(card, encoding="utf-8")


class _FromOnnxRuntimeQuantization(logging.Filter):
    """ONNX Runtime's quantizer logs on the root logger: a note to preprocess, and every tensor it leaves in float with
    its whole type proto (about 20 lines an export)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def exporters_quiet(verbose: bool) -> Iterator[None]:
    """An export's own chatter, about 35 lines none of which asks anything of the user: torch.onnx prints its steps to
    stdout (which holds the command's answer) and warns of torchvision kernels it skips; transformers warns that its
    exporters are experimental and names the versions they were tested with; ONNX Runtime's quantizer logs on the root
    logger; torch.export raises a FutureWarning of its own. Warnings hf_spam does not expect, and errors, stay; with
    ``-v`` everything does, the steps on stderr."""
    if verbose:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "transformers.exporters")]
    levels = [logger.level for logger in loggers]
    quantization = _FromOnnxRuntimeQuantization()
    root = logging.getLogger()
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        root.addFilter(quantization)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
            yield
    finally:
        root.removeFilter(quantization)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
