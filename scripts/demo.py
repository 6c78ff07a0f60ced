"""``hf-spam demo`` as a script: ``python scripts/demo.py ...`` keeps working in a clone."""

import sys

from hf_spam.cli.demo import main

if __name__ == "__main__":
    main(sys.argv[1:])
