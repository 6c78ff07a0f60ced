"""Chapter 6's data as ``datasets``: the SMS Spam Collection prepared exactly as the book (``sms``), any other
text-classification data with its own splits and labels (``user_files``, read by ``reading``; regression and
multi-label targets in ``targets``), GPT-2 tokenization with the book's padding choices (``tokenization``), and a
real 3-class dataset built from the standard library's docstrings for the docs' worked example (``docstring_corpus``).

What a user calls is exported here; the modules' other names serve the package.
"""

from ..errors import DataError
from .sms import fetch_sms_spam, load_sms_spam
from .tokenization import TokenizedData, describe, tokenize
from .user_files import ClassificationData, load_text_classification

__all__ = [
    "ClassificationData",
    "DataError",
    "TokenizedData",
    "describe",
    "fetch_sms_spam",
    "load_sms_spam",
    "load_text_classification",
    "tokenize",
]
