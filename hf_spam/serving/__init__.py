"""Using a finetuned classifier: loaded and classified (``classifier``: ``load_classifier``, ``classify``, what
``hf-spam classify`` runs), exported with transformers' own exporters (ONNX, OpenVINO, int8) and run by their runtimes
(``export``, ``runtime``), its numbers in length-sorted batches whatever runs it (``predict``), and a file of any size
classified in bounded memory (``streaming``). Names are imported on first use, so that loading a PyTorch model does
not import the exporters."""

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
