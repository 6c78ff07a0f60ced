"""``hf-spam train`` as a script: ``python scripts/train.py ...`` (and ``accelerate launch scripts/train.py``) keeps working in a clone."""

import sys

from hf_spam.cli.train import main

if __name__ == "__main__":
    main(sys.argv[1:])
