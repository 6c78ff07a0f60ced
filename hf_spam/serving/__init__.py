"""Serving a finetuned classifier: exported with transformers' own exporters (ONNX, OpenVINO, int8) and run by
their runtimes (``export``, ``runtime``), its numbers in length-sorted batches whatever runs it (``predict``), and a
file of any size classified in bounded memory (``streaming``). Names are imported on first use, so that
``hf_spam.serving.classifier`` can use ``predict`` without importing the exporters."""

from ..lazy import lazy_names

__all__ = ["BACKENDS", "EXPORT_FORMATS", "QUANTIZATIONS", "classify_stream", "export_classifier", "exported_format", "load_exported"]
__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "BACKENDS": ".runtime",
        "EXPORT_FORMATS": ".export",
        "QUANTIZATIONS": ".export",
        "classify_stream": ".streaming",
        "export_classifier": ".export",
        "exported_format": ".runtime",
        "load_exported": ".runtime",
    },
)
