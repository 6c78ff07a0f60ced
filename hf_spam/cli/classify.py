"""Classify texts with a finetuned model (a saved folder or a Hub id): the book's classify_review.

examples:
  hf-spam classify runs/spam "You won a free prize! Text WIN to 80080" "See you at 5?"
  hf-spam classify runs/spam --file messages.txt --jsonl        # one text per line
  hf-spam classify runs/topics --threshold 0.3 "..."            # a multi-label model: every class above 0.3
  echo "Hey, are we still on for dinner?" | hf-spam classify runs/spam
"""

from __future__ import annotations

import argparse
import json
import sys

from transformers.utils.logging import disable_progress_bar

from ..errors import DataError
from ..inference import check_batch_size, classify, load_classifier, read_text_file, split_lines, summary
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
        "--threshold",
        type=float,
        default=None,
        help="multi-label models: show every class whose probability is above this (default: the --threshold the model was trained with)",
    )
    return parser


def read_texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        return args.texts
    texts, where = (read_text_file(args.file), args.file) if args.file else (split_lines(sys.stdin.buffer.read(), "stdin"), "stdin")
    if not texts:
        raise DataError(f"No texts to classify: {where} is empty. Pass texts as arguments, --file FILE (one per line), or lines on stdin.")
    return texts


def classify_texts(args: argparse.Namespace) -> list[dict]:
    check_batch_size(args.batch_size)
    texts = read_texts(args)
    return classify(load_classifier(args.model, args.device), texts, args.batch_size, args.threshold)


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    log_warnings()
    disable_progress_bar()  # stderr holds warnings and errors only
    for result in report_errors(lambda: classify_texts(args)):
        print(json.dumps(result, ensure_ascii=False) if args.jsonl else f"{summary(result)}\t{result['text']}")
