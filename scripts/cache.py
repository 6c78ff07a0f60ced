"""``hf-spam cache`` as a script: ``python scripts/cache.py ...`` keeps working in a clone."""

import sys

from hf_spam.cli.cache import main

if __name__ == "__main__":
    main(sys.argv[1:])
