"""Classify texts with a finetuned model (a saved folder or a Hub id): the book's classify_review.

python scripts/classify.py runs/spam "You won a free prize! Text WIN to 80080" "See you at 5?"
python scripts/classify.py runs/spam --file messages.txt --jsonl     # one text per line
echo "Hey, are we still on for dinner?" | python scripts/classify.py runs/spam
"""

import argparse
import json
import sys

from hf_spam.inference import classify, load_classifier, read_text_file


def read_texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        return args.texts
    if args.file:
        return read_text_file(args.file)
    return sys.stdin.read().splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="folder written by scripts/train.py, or a Hub id")
    parser.add_argument("texts", nargs="*", help="texts to classify (default: --file, else stdin, one per line)")
    parser.add_argument("--file", help="a UTF-8 text file, one text per line (undecodable bytes become U+FFFD)")
    parser.add_argument("--jsonl", action="store_true", help="print one JSON object per text")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1")
    args = parser.parse_intermixed_args()
    results = classify(load_classifier(args.model, args.device), read_texts(args), args.batch_size)
    for result in results:
        print(json.dumps(result, ensure_ascii=False) if args.jsonl else f"{result['label']}\t{result['score']:.4f}\t{result['text']}")


if __name__ == "__main__":
    main()
