"""The models hf_spam defines, a folder each as transformers' ``models/<name>/``: ``gpt``, the book's GPT."""
