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

from ..serving.export import EXPORT_FORMATS, NUMBERS, QUANTIZATIONS, exporters_quiet
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


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    log_warnings()
    report_errors(lambda: export(args))
