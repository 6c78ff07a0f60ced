"""One benchmark run in this process, its figures printed as one JSON line: what :func:`hf_spam.benchmark.orchestrate`
starts as ``python -m hf_spam.benchmark.worker VARIANT CHECKPOINT DATA_FILE SEED QUICK BASELINE_REUSES_FREED_MEMORY``."""

from __future__ import annotations

import json
import sys

from .runs import run_variant, time_inference
from .serving import time_serving


def main(argv: list[str]) -> None:
    variant, checkpoint, data_file, seed, quick, baseline_reuses_memory = argv
    if variant.startswith("serve_"):  # CHECKPOINT is then the backend's model folder
        result = time_serving(variant.removeprefix("serve_"), checkpoint, data_file)
    elif variant.startswith("infer_"):
        result = time_inference(variant.removeprefix("infer_"), checkpoint, data_file)
    else:
        result = run_variant(variant, checkpoint, data_file, quick == "True", int(seed), baseline_reuses_memory == "True")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
