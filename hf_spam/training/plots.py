"""The chapter's figures 6.16 (loss) and 6.17 (accuracy), drawn from ``Trainer``'s log history.

Figures are built with ``matplotlib.figure.Figure`` directly, which needs no backend: importing
hf_spam never changes the user's matplotlib backend.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def _series(log_history: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(entry["epoch"], entry[key]) for entry in log_history if key in entry and "epoch" in entry]
    return [p[0] for p in points], [p[1] for p in points]


def _plot(series: dict[str, tuple[list[float], list[float]]], ylabel: str, path: Path, examples_per_epoch: int) -> None:
    """Values against epochs (bottom axis) and examples seen (top axis), as ``plot_values`` in the book."""
    fig = Figure(figsize=(5, 3))
    ax1 = fig.subplots()
    for label, (epochs, values) in series.items():
        ax1.plot(epochs, values, marker="o" if len(epochs) < 30 else None, linestyle="-" if "Training" in label else "-.", label=label)
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(ylabel)
    ax1.legend(fontsize="small")
    ax2 = ax1.twiny()
    ax2.set_xlim(*(x * examples_per_epoch for x in ax1.get_xlim()))
    ax2.set_xlabel("Examples seen")
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        fig.savefig(path.with_suffix(suffix))


def plot_history(
    log_history: list[dict], output_dir: str | Path, examples_per_epoch: int, train_accuracy_examples: tuple[int, int] | None = None
) -> None:
    """Write ``loss.png``/``.pdf`` and ``accuracy.png``/``.pdf`` into ``output_dir``.

    ``train_accuracy_examples`` = (examples measured, training-split size) labels the training accuracy
    curve with the sample it was computed on (the book measures 5 batches, i.e. 40 examples).
    """
    output_dir = Path(output_dir)
    train_label = "Training accuracy"
    if train_accuracy_examples:
        measured, size = train_accuracy_examples
        train_label += f" (all {size:,} examples)" if measured == size else f" (first {measured:,} of {size:,} examples)"
    loss = {"Training loss": _series(log_history, "loss"), "Validation loss": _series(log_history, "eval_validation_loss")}
    accuracy = {
        train_label: _series(log_history, "eval_train_accuracy"),
        "Validation accuracy": _series(log_history, "eval_validation_accuracy"),
    }
    _plot(loss, "Loss", output_dir / "loss", examples_per_epoch)
    _plot(accuracy, "Accuracy", output_dir / "accuracy", examples_per_epoch)
