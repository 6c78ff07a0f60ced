"""A Gradio app that classifies typed messages with a finetuned model (the chapter's user interface).

examples:
  hf-spam demo runs/spam                                    # a local folder, http://127.0.0.1:7860
  hf-spam demo you/spam-classifier --port 8000
  hf-spam demo runs/spam-onnx                               # an hf-spam export, on ONNX Runtime
  hf-spam demo you/spam-classifier --space_dir space/       # write a ready-to-upload Space folder instead

Needs the demo extra: pip install "hf_spam[demo]"
"""

from __future__ import annotations

import argparse

from .common import Parser, log_warnings, report_errors


def parser() -> Parser:
    parser = Parser("demo", __doc__)
    parser.add_argument("model", help="folder written by hf-spam train, or a Hub id")
    parser.add_option("--port", type=int, default=None, help="port to serve on (default: Gradio's, 7860)")
    parser.add_option("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 to share on your network)")
    parser.add_option(
        "--threshold",
        type=float,
        default=None,
        help="multi-label models: list every class whose probability is above this (default: the model's, from training)",
    )
    parser.add_option(
        "--backend",
        choices=("torch", "onnx", "openvino"),
        default=None,
        help="torch (a saved model), onnx or openvino (an export); default: the folder's",
    )
    parser.add_option("--space_dir", help="write a Hugging Face Space folder for this Hub model id and exit")
    return parser


def demo(args: argparse.Namespace) -> None:
    from ..demo import launch, write_space  # gradio: imported only when the demo runs

    if args.space_dir:
        folder = write_space(args.model, args.space_dir)
        print(f"Space folder written to {folder}; upload it with: hf upload --repo-type space you/space-name {args.space_dir}")
        return
    launch(args.model, args.port, args.host, args.threshold, args.backend)


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    log_warnings()
    report_errors(lambda: demo(args))
