"""Chapter 6's bonus experiment table (rows 1-19) through hf_spam's Trainer path.

python scripts/experiments.py --list
python scripts/experiments.py 1 10 no_padding --data_file path/to/SMSSpamCollection --output_dir runs/experiments
python scripts/experiments.py all --reduced --weights random --data_file path/to/SMSSpamCollection --output_dir runs/table

Arguments this script does not know are passed to every row's scripts/train.py (e.g. --data_file,
--num_train_epochs, --bf16). Writes experiments.md and experiments.json into --output_dir.
"""

import argparse
import logging

from hf_spam.allocator import reuse_freed_memory
from hf_spam.experiments import listing, run_experiments, select, to_markdown, write_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", help="row numbers or names (default: all)")
    parser.add_argument("--list", action="store_true", help="show the 19 rows and their settings")
    parser.add_argument("--output_dir", default="runs/experiments")
    parser.add_argument("--reduced", action="store_true", help="each model size shrunk 6x deeper-wise and 12x in width (quick table)")
    parser.add_argument(
        "--weights",
        choices=["auto", "pretrained", "random"],
        default="auto",
        help="auto: OpenAI's weights where they can be fetched, else random",
    )
    args, train_args = parser.parse_known_args()
    if args.list:
        print(listing())
        return
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    reuse_freed_memory()  # every row trains in this process, with scripts/train.py's default allocator tuning
    table = run_experiments(select(args.rows), train_args, args.output_dir, reduced=args.reduced, weights=args.weights)
    write_table(table, args.output_dir)
    print(to_markdown(table))


if __name__ == "__main__":
    main()
