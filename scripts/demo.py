"""A Gradio app that classifies typed messages with a finetuned model (the chapter's user interface).

python scripts/demo.py runs/spam                     # a local folder, http://127.0.0.1:7860
python scripts/demo.py you/spam-classifier --port 8000
python scripts/demo.py you/spam-classifier --space_dir space/   # write a ready-to-upload Space folder instead

Needs the demo extra: pip install -e ".[demo]"
"""

import argparse

from hf_spam.demo import launch, write_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="folder written by scripts/train.py, or a Hub id")
    parser.add_argument("--port", type=int, default=None, help="port to serve on (default: Gradio's, 7860)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 to share on your network)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="multi-label models: list every class whose probability is above this (default: the model's, from training)",
    )
    parser.add_argument("--space_dir", help="write a Hugging Face Space folder for this Hub model id and exit")
    args = parser.parse_args()
    if args.space_dir:
        print(
            f"Space folder written to {write_space(args.model, args.space_dir)}; upload it with: hf upload --repo-type space you/space-name {args.space_dir}"
        )
        return
    launch(args.model, args.port, args.host, args.threshold)


if __name__ == "__main__":
    main()
