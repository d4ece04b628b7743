"""The report's figures (matplotlib, Agg backend, PNG) and :class:`ModelEvals`, the model dir and
eval files that they and the report's tables are drawn from. :mod:`pipeline.evaluation.report` writes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ModelEvals:
    """One model dir and its eval files, by split."""

    name: str  # path relative to the experiment folder
    folder: Path
    kind: str  # student | teacher
    evals: dict[str, dict] = field(default_factory=dict)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_name(name: str) -> str:
    """``name`` as a file-name part (letters, digits, ``_.-``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def plot_confusion(evaluation: dict, title: str, path: Path) -> None:
    """Row-normalised confusion matrix (gold rows, predicted columns), counts in the cells."""
    plt = _pyplot()
    confusion = evaluation["metrics"]["confusion"]
    labels, matrix = confusion["labels"], np.asarray(confusion["matrix"], dtype=np.float64)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.28 * len(labels) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size * 0.9))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    axes.set_yticks(range(len(labels)), labels, fontsize=6)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    for row, column in zip(*np.nonzero(matrix), strict=True):
        axes.text(column, row, int(matrix[row, column]), ha="center", va="center", fontsize=5,
                  color="white" if rates[row, column] > 0.5 else "black")  # fmt: skip
    figure.colorbar(image, ax=axes, fraction=0.04, label="fraction of the gold intent")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_accuracy_vs_snr(models: list[ModelEvals], split: str, path: Path) -> None:
    """Accuracy per SNR, one line per model and noise type; clean at the left."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    snrs = sorted({row["snr_db"] for m in models if split in m.evals for row in (m.evals[split].get("noise_sweep") or [])
                   if row["snr_db"] is not None}, reverse=True)  # fmt: skip
    positions = {snr: i + 1 for i, snr in enumerate(snrs)}
    others = list(dict.fromkeys(row["condition"] for m in models if split in m.evals  # reverb, telephone, ...
                                for row in (m.evals[split].get("noise_sweep") or [])
                                if row["snr_db"] is None and row["noise"] != "clean"))  # fmt: skip
    other_positions = {name: len(snrs) + 1.5 + i for i, name in enumerate(others)}
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, model in enumerate(models):
        evaluation = model.evals.get(split)
        if evaluation is None:
            continue
        color = colors[index % len(colors)]
        sweep = evaluation.get("noise_sweep")
        if not sweep:  # the teacher reads text: a flat reference line
            axes.axhline(evaluation["metrics"]["accuracy"], color=color, linestyle=(0, (1, 3)),
                         label=f"{model.name} (clean {'text' if model.kind == 'teacher' else 'only'})")  # fmt: skip
            continue
        clean = next((row["accuracy"] for row in sweep if row["noise"] == "clean"), None)
        noises = list(dict.fromkeys(row["noise"] for row in sweep if row["snr_db"] is not None))
        for number, noise in enumerate(noises):
            rows = sorted((row for row in sweep if row["noise"] == noise), key=lambda r: -r["snr_db"])
            xs = ([0] if clean is not None else []) + [positions[row["snr_db"]] for row in rows]
            ys = ([clean] if clean is not None else []) + [row["accuracy"] for row in rows]
            axes.plot(xs, ys, marker="o", color=color, linestyle=styles[number % len(styles)],
                      label=f"{model.name}, {noise}")  # fmt: skip
        rows = [row for row in sweep if row["condition"] in other_positions]
        axes.plot([other_positions[row["condition"]] for row in rows], [row["accuracy"] for row in rows],
                  marker="s", color=color, linestyle="none")  # fmt: skip
    axes.set_xticks([0] + list(positions.values()) + list(other_positions.values()),
                    ["clean"] + [f"{snr:g}" for snr in snrs] + [name.replace("_", " ") for name in others],
                    fontsize=7)  # fmt: skip
    axes.set_xlabel("SNR (dB); conditions without an SNR at the right")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(f"Accuracy under noise ({split})", fontsize=10)
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_per_intent_f1(models: list[ModelEvals], split: str, path: Path) -> None:
    """Heat map of per-intent F1, intents down, models across."""
    plt = _pyplot()
    present = [m for m in models if split in m.evals]
    intents = list(present[0].evals[split]["metrics"]["per_intent"])
    values = np.array([[m.evals[split]["metrics"]["per_intent"].get(i, {}).get("f1", np.nan) for m in present]
                       for i in intents])  # fmt: skip
    figure, axes = plt.subplots(figsize=(2.5 + 1.3 * len(present), 1.5 + 0.22 * len(intents)))
    image = axes.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(range(len(present)), [m.name for m in present], rotation=30, ha="right", fontsize=7)
    axes.set_yticks(range(len(intents)), intents, fontsize=6)
    for row in range(len(intents)):
        for column in range(len(present)):
            axes.text(column, row, f"{values[row, column]:.2f}", ha="center", va="center", fontsize=5.5,
                      color="black" if values[row, column] > 0.6 else "white")  # fmt: skip
    figure.colorbar(image, ax=axes, fraction=0.05, label="F1")
    axes.set_title(f"Per-intent F1 ({split})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_training_curves(logs: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Train loss and valid accuracy per epoch, one line per model."""
    plt = _pyplot()
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for name, log in logs.items():
        loss_axes.plot(log["epoch"], log["train_loss"], marker=".", label=name)
        accuracy_axes.plot(log["epoch"], log["valid_accuracy"], marker=".", label=name)
    loss_axes.set_yscale("log")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("train loss (each model's own total, log scale)")
    accuracy_axes.set_xlabel("epoch")
    accuracy_axes.set_ylabel("valid accuracy")
    accuracy_axes.set_ylim(0, 1.02)
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle("Training curves (train_log.csv)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
