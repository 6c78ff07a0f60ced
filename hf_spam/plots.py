"""The chapter's figures 6.16 (loss) and 6.17 (accuracy), drawn from ``Trainer``'s log history."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _series(log_history: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(entry["epoch"], entry[key]) for entry in log_history if key in entry and "epoch" in entry]
    return [p[0] for p in points], [p[1] for p in points]


def _plot(series: dict[str, tuple[list[float], list[float]]], ylabel: str, path: Path, examples_per_epoch: int) -> None:
    """Values against epochs (bottom axis) and examples seen (top axis), as ``plot_values`` in the book."""
    fig, ax1 = plt.subplots(figsize=(5, 3))
    for label, (epochs, values) in series.items():
        ax1.plot(epochs, values, marker="o" if len(epochs) < 30 else None, linestyle="-" if "Training" in label else "-.", label=label)
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(ylabel)
    ax1.legend()
    ax2 = ax1.twiny()
    ax2.set_xlim(*(x * examples_per_epoch for x in ax1.get_xlim()))
    ax2.set_xlabel("Examples seen")
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        fig.savefig(path.with_suffix(suffix))
    plt.close(fig)


def plot_history(log_history: list[dict], output_dir: str | Path, examples_per_epoch: int) -> None:
    """Write ``loss.png``/``.pdf`` and ``accuracy.png``/``.pdf`` into ``output_dir``."""
    output_dir = Path(output_dir)
    loss = {"Training loss": _series(log_history, "loss"), "Validation loss": _series(log_history, "eval_validation_loss")}
    accuracy = {
        "Training accuracy": _series(log_history, "eval_train_accuracy"),
        "Validation accuracy": _series(log_history, "eval_validation_accuracy"),
    }
    _plot(loss, "Loss", output_dir / "loss", examples_per_epoch)
    _plot(accuracy, "Accuracy", output_dir / "accuracy", examples_per_epoch)
