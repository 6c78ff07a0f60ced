"""Chapter 6's bonus experiment table (rows 1-19) through hf_spam's Trainer path.

examples:
  hf-spam experiments --list
  hf-spam experiments 1 10 no_padding --data_file path/to/SMSSpamCollection --output_dir runs/experiments
  hf-spam experiments all --reduced --weights random --data_file path/to/SMSSpamCollection --output_dir runs/table

Options this command does not know are passed to every row's hf-spam train (e.g. --data_file,
--num_train_epochs, --bf16). Writes experiments.md and experiments.json into --output_dir.
"""

from __future__ import annotations

import argparse
import logging

from ..training.allocator import reuse_freed_memory
from ..training.experiments import listing, run_experiments, select, to_markdown, write_table
from .common import Parser, report_errors


def parser() -> Parser:
    parser = Parser("experiments", __doc__)
    parser.add_argument("rows", nargs="*", help="row numbers or names (default: all)")
    parser.add_option("--list", action="store_true", help="show the 19 rows and their settings")
    parser.add_option("--output_dir", default="runs/experiments")
    parser.add_option("--reduced", action="store_true", help="each model size shrunk 6x deeper-wise and 12x in width (quick table)")
    parser.add_option(
        "--weights",
        choices=["auto", "pretrained", "random"],
        default="auto",
        help="auto: OpenAI's weights where they can be fetched, else random",
    )
    return parser


def experiments(args: argparse.Namespace, train_args: list[str]) -> None:
    reuse_freed_memory()  # every row trains in this process, with hf-spam train's default allocator tuning
    table = run_experiments(select(args.rows), train_args, args.output_dir, reduced=args.reduced, weights=args.weights)
    write_table(table, args.output_dir)
    print(to_markdown(table))


def main(argv: list[str]) -> None:
    args, train_args = parser().parse_known_args(argv)
    if args.list:
        print(listing())
        return
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    report_errors(lambda: experiments(args, train_args))
