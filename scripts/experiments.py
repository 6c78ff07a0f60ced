"""``hf-spam experiments`` as a script: ``python scripts/experiments.py ...`` keeps working in a clone."""

import sys

from hf_spam.cli.experiments import main

if __name__ == "__main__":
    main(sys.argv[1:])
