"""Export a finetuned classifier with transformers' exporters, for ONNX Runtime or OpenVINO (optionally int8).

examples:
  hf-spam export runs/spam --output_dir runs/spam-onnx                      # ONNX, float32
  hf-spam export runs/spam --output_dir runs/spam-int8 --quantize int8      # int8 weights (ONNX Runtime)
  hf-spam export runs/spam --output_dir runs/spam-ov --format openvino
  hf-spam export runs/spam --output_dir runs/spam-bf16 --format openvino --precision bf16   # CPUs with AMX/AVX512-BF16
  hf-spam classify runs/spam-onnx "See you at 5?"                           # runs on ONNX Runtime, no run folder needed

Needs the export extra: pip install "hf_spam[export]"
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator

from ..serving.export import EXPORT_FORMATS, NUMBERS, QUANTIZATIONS
from ..serving.runtime import PRECISIONS
from .common import Parser, log_warnings, report_errors


def parser() -> Parser:
    parser = Parser("export", __doc__)
    parser.add_argument("model", help="folder written by hf-spam train, or a Hub id")
    parser.add_option("--output_dir", required=True, help="a new folder for the export (it must not exist yet, or be empty)")
    parser.add_option("--format", choices=EXPORT_FORMATS, default="onnx", help="onnx (ONNX Runtime) or openvino (default: onnx)")
    parser.add_option("--quantize", choices=QUANTIZATIONS, default=None, help="int8 weights (default: float32, the model's own numbers)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show what the exporters print as they work (torch.onnx, ONNX Runtime)"
    )
    parser.add_option(
        "--precision",
        choices=tuple(PRECISIONS),
        default="fp32",
        help="bf16: OpenVINO computes in bf16, on CPUs with native bf16 (AMX, AVX512-BF16) only (default: fp32)",
    )
    return parser


def export(args: argparse.Namespace) -> None:
    from ..serving.export import export_classifier  # the exporters' packages: imported only when exporting

    with exporters_quiet(args.verbose):
        report = export_classifier(args.model, args.output_dir, args.format, args.quantize, args.precision)
    numbers = report["quantize"] or NUMBERS[report["precision"]]
    print(
        f"Exported {args.model} to {args.output_dir} ({report['format']}, {numbers}) in {report['seconds']:.0f} s, "
        f"{report['bytes'] / 1e6:.1f} MB; against PyTorch: max |Δprob| {report['max_abs_prob_diff']:.2g}, "
        f"labels {'identical' if report['labels_agree'] else 'differ'}."
    )


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


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    log_warnings()
    report_errors(lambda: export(args))
