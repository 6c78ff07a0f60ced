"""Classify texts with a finetuned model (a saved folder or a Hub id): the book's classify_review.

python scripts/classify.py runs/spam "You won a free prize! Text WIN to 80080" "See you at 5?"
python scripts/classify.py runs/spam --file messages.txt --jsonl     # one text per line
python scripts/classify.py runs/topics --threshold 0.3 "..."         # a multi-label model: every class above 0.3
echo "Hey, are we still on for dinner?" | python scripts/classify.py runs/spam
"""

import argparse
import json
import logging
import sys

from transformers.utils.logging import disable_progress_bar

from hf_spam.errors import DataError, HfSpamError
from hf_spam.inference import check_batch_size, classify, load_classifier, read_text_file, split_lines, summary


def read_texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        return args.texts
    texts, where = (read_text_file(args.file), args.file) if args.file else (split_lines(sys.stdin.buffer.read(), "stdin"), "stdin")
    if not texts:
        raise DataError(f"No texts to classify: {where} is empty. Pass texts as arguments, --file FILE (one per line), or lines on stdin.")
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="folder written by scripts/train.py, or a Hub id")
    parser.add_argument("texts", nargs="*", help="texts to classify (default: --file, else stdin, one per line)")
    parser.add_argument("--file", help="a UTF-8 text file, one text per line (undecodable bytes become U+FFFD)")
    parser.add_argument("--jsonl", action="store_true", help="print one JSON object per text")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="multi-label models: show every class whose probability is above this (default: the --threshold the model was trained with)",
    )
    args = parser.parse_intermixed_args()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    disable_progress_bar()  # stderr holds warnings and errors only
    try:
        check_batch_size(args.batch_size)
        texts = read_texts(args)
        results = classify(load_classifier(args.model, args.device), texts, args.batch_size, args.threshold)
    except HfSpamError as error:  # the message names the input and what to do: no traceback
        logging.getLogger("hf_spam").error("%s", error)
        sys.exit(2)
    for result in results:
        print(json.dumps(result, ensure_ascii=False) if args.jsonl else f"{summary(result)}\t{result['text']}")


if __name__ == "__main__":
    main()
