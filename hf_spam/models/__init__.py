"""The models hf_spam defines, a folder each as transformers' ``models/<name>/``: ``gpt``, the book's GPT (the files a
saved model carries); and, beside it, ``convert_gpt2``, the conversion from and to OpenAI's GPT-2 and the book's
checkpoints, which a saved model does not need."""
