"""Classify texts with a finetuned model (a saved folder or a Hub id): the book's classify_review.

examples:
  hf-spam classify runs/spam "You won a free prize! Text WIN to 80080" "See you at 5?"
  hf-spam classify runs/spam --file messages.txt --jsonl        # one text per line
  hf-spam classify runs/topics --threshold 0.3 "..."            # a multi-label model: every class above 0.3
  echo "Hey, are we still on for dinner?" | hf-spam classify runs/spam
  hf-spam classify runs/spam-onnx --file big.txt --batch_size 64 > labels.tsv   # an hf-spam export folder

A file or stdin is read and classified a chunk at a time (memory stays flat for any number of lines), each chunk
in length-sorted batches; the answers come out in the input's order.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import torch

from ..errors import DataError, OptionError
from ..models.gpt.configuration_gpt import MULTI_LABEL
from ..serving.classifier import check_batch_size, load_classifier, read_lines, summary
from ..serving.runtime import BACKENDS
from ..serving.streaming import classify_stream, read_file
from .common import Parser, log_warnings, report_errors


def parser() -> Parser:
    parser = Parser("classify", __doc__)
    parser.add_argument("model", help="folder written by hf-spam train, or a Hub id")
    parser.add_argument("texts", nargs="*", help="texts to classify (default: --file, else stdin, one per line)")
    parser.add_option("--file", help="a UTF-8 text file, one text per line (undecodable bytes become U+FFFD)")
    parser.add_option("--jsonl", action="store_true", help="print one JSON object per text")
    parser.add_option("--batch_size", type=int, default=8)
    parser.add_option("--device", default=None, help="e.g. cpu, cuda, cuda:1")
    parser.add_option(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="torch (a saved model), onnx or openvino (an export); default: the folder's",
    )
    parser.add_option("--progress", action="store_true", help="--file's progress bar on stderr (default: only on a terminal)")
    parser.add_option(
        "--threshold",
        type=float,
        default=None,
        help="multi-label models: show every class whose probability is above this (default: the --threshold the model was trained with)",
    )
    return parser


def read_texts(args: argparse.Namespace) -> Iterator[str]:
    """The texts: the arguments, else --file's lines, else stdin's, read as they are classified."""
    if args.texts:
        yield from args.texts
        return
    where = args.file or "stdin"
    lines = read_file(args.file, progress=args.progress or None) if args.file else read_lines(sys.stdin.buffer, "stdin")
    empty = True
    for text in lines:
        empty = False
        yield text
    if empty:
        raise DataError(f"No texts to classify: {where} is empty. Pass texts as arguments, --file FILE (one per line), or lines on stdin.")


def print_results(args: argparse.Namespace) -> None:
    check_batch_size(args.batch_size)
    check_device(args.device)
    classifier = load_classifier(args.model, args.device, args.backend)
    problem_type = classifier.model.config.problem_type
    if args.threshold is not None and problem_type != MULTI_LABEL:
        raise OptionError(
            f"--threshold {args.threshold}: {args.model} is a {problem_type or 'single_label_classification'} model, which "
            "predicts its most probable class (or its values); a threshold applies to multi-label models only."
        )
    for result in classify_stream(classifier, read_texts(args), args.batch_size, args.threshold):
        print(json.dumps(result, ensure_ascii=False) if args.jsonl else f"{summary(result)}\t{result['text']}")


def check_device(device: str | None) -> None:
    """``--device``: one torch knows, and one this machine has (torch's own errors are a traceback or an assertion)."""
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise OptionError(f"--device {device}: not a device; give cpu, cuda or cuda:N (or leave it out).") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device {device}: this machine has no CUDA GPU torch can use; leave --device out to run on the CPU.")


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    log_warnings()  # stderr holds warnings and errors only (and --file's progress bar, on a terminal)
    report_errors(lambda: print_results(args))
