"""Intervals and paired comparisons over seeds for the benchmark tables (``benchmarks/distill.py``).

A row of the ablation is several training runs (seeds) of one recipe, each scored on the same
utterances. :func:`correct_matrix` stacks their per-utterance correct/incorrect answers into a
``[seeds, utterances]`` matrix; :func:`row_cell` writes ``mean ± sd [low, high]`` (the interval
resamples both seeds and utterances, :func:`pipeline.scoring.intervals.seeded_bootstrap`);
:func:`paired_cell` compares two rows on the same utterances (ahead or behind only where the
interval of the difference excludes 0, :func:`pipeline.scoring.intervals.seeded_paired_bootstrap`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

from pipeline.scoring.intervals import interval_verdict, seeded_bootstrap, seeded_paired_bootstrap

BOOTSTRAP_RESAMPLES = 1000  # per cell; a few dozen cells a table


def correct_matrix(predicted: Sequence[Sequence[int]], gold: np.ndarray) -> np.ndarray:
    """``[seeds, utterances]`` bool: each run's predictions (rows) against the gold intents."""
    if not predicted:
        return np.zeros((0, len(gold)), dtype=bool)
    return np.array([np.asarray(run) == gold for run in predicted], dtype=bool)


def row_cell(correct: np.ndarray) -> str:
    """``98.12 ± 0.30 [97.10, 98.90]`` (percent; one seed: no ± part); ``-`` without runs."""
    if correct.size == 0:
        return "-"
    per_seed = [100 * float(row.mean()) for row in correct]
    estimate = seeded_bootstrap(correct, BOOTSTRAP_RESAMPLES)
    spread = f" ± {statistics.stdev(per_seed):.2f}" if len(per_seed) > 1 else ""
    return f"{statistics.mean(per_seed):.2f}{spread} [{100 * estimate.low:.2f}, {100 * estimate.high:.2f}]"


def paired_cell(a: np.ndarray, b: np.ndarray) -> tuple[str, str]:
    """``("ahead +1.20 [0.30, 2.10]", verdict)``: A minus B in points with its 95% interval over
    seeds and utterances, and the verdict; ``("-", "")`` when either has no runs."""
    if a.size == 0 or b.size == 0:
        return "-", ""
    difference = seeded_paired_bootstrap(a, b, BOOTSTRAP_RESAMPLES)
    verdict = interval_verdict(difference)
    return (
        f"{verdict} {100 * difference.difference:+.2f} [{100 * difference.low:+.2f}, {100 * difference.high:+.2f}]",
        verdict,
    )


def mean_spread(values: list[float]) -> str:
    """``mean ± sd`` over seeds of a score kept without its per-utterance outcomes (command acceptance)."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
