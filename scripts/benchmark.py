"""Time the book recipe: hf_spam (default and book-exact) vs transformers GPT-2 + Trainer, and inference.

python scripts/benchmark.py --data_file ../shared/data/sms_spam/SMSSpamCollection --quick --json bench.json
"""

from hf_spam.benchmark import main

if __name__ == "__main__":
    main()
