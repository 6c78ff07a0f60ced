"""Chapter 6's data as ``datasets``: the SMS Spam Collection prepared exactly as the book (``sms``), any other
text-classification data with its own splits and labels (``user_files``, read by ``reading``; regression and
multi-label targets in ``targets``), and GPT-2 tokenization with the book's padding choices (``tokenization``).
"""

from ..configuration_gpt import MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL
from ..errors import DataError
from .reading import LOCAL_FORMATS, QUOTINGS, SPLIT_ALIASES, encoding_of, parse_encodings
from .sms import (
    SMS_LABELS,
    SMS_SPAM_SHA256,
    SMS_SPAM_URL,
    balance_classes,
    check_sms_lines,
    download_sms_spam,
    fetch_sms_spam,
    load_sms_spam,
    load_sms_spam_frame,
    parse_sms_spam,
    read_sms_spam_bytes,
    sms_spam_url,
    split_like_the_book,
)
from .tokenization import PADDINGS, TokenizedData, cross_split_duplicates, describe, duplicate_report, tokenize
from .user_files import INVALID_ROWS, ClassificationData, load_text_classification

__all__ = [
    "INVALID_ROWS",
    "LOCAL_FORMATS",
    "MULTI_LABEL",
    "PADDINGS",
    "PROBLEM_TYPES",
    "QUOTINGS",
    "REGRESSION",
    "SINGLE_LABEL",
    "SMS_LABELS",
    "SMS_SPAM_SHA256",
    "SMS_SPAM_URL",
    "SPLIT_ALIASES",
    "ClassificationData",
    "DataError",
    "TokenizedData",
    "balance_classes",
    "check_sms_lines",
    "cross_split_duplicates",
    "describe",
    "download_sms_spam",
    "duplicate_report",
    "encoding_of",
    "fetch_sms_spam",
    "load_sms_spam",
    "load_sms_spam_frame",
    "load_text_classification",
    "parse_encodings",
    "parse_sms_spam",
    "read_sms_spam_bytes",
    "sms_spam_url",
    "split_like_the_book",
    "tokenize",
]
