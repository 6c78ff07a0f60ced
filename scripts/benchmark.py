"""``hf-spam benchmark`` as a script: ``python scripts/benchmark.py ...`` keeps working in a clone."""

import sys

from hf_spam.cli.benchmark import main

if __name__ == "__main__":
    main(sys.argv[1:])
