"""``hf-spam classify`` as a script: ``python scripts/classify.py ...`` keeps working in a clone."""

import sys

from hf_spam.cli.classify import main

if __name__ == "__main__":
    main(sys.argv[1:])
