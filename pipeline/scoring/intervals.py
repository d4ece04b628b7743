"""How sure a number is: 95% intervals of accuracies and paired tests between two models.

- :func:`wilson_interval`: the Wilson score interval of a proportion (an accuracy over ``n``
  utterances); :func:`accuracy_estimate` bundles it with the accuracy and ``n``, and
  :func:`format_estimate` writes ``97.3% [95.1, 98.6] n=200``;
- :func:`bootstrap_interval`: a percentile bootstrap over utterances for a statistic that is no
  proportion (macro-F1, a mean);
- :func:`mcnemar_exact`: McNemar's exact test on two models' per-utterance correct/incorrect
  vectors over the same utterances (a two-sided binomial test on the discordant pairs);
- :func:`paired_bootstrap`: the difference of two accuracies on the same utterances with its
  bootstrap interval (utterances resampled in pairs);
- :func:`verdict`: ``"ahead"``, ``"behind"`` or ``"level"``: ahead or behind only where McNemar's
  test rejects equality at ``alpha``;
- :func:`seeded_bootstrap`, :func:`seeded_paired_bootstrap`: the same over several training seeds
  (a ``[seeds, utterances]`` matrix per model): seeds and utterances are both resampled, so the
  interval holds the seed-to-seed spread as well as the utterances'; with one seed they are the
  plain utterance bootstraps. :func:`interval_verdict` reads ahead/behind/level off such an
  interval (ahead only when it lies above 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
AHEAD, BEHIND, LEVEL = "ahead", "behind", "level"


class Estimate(NamedTuple):
    """A proportion (or statistic) with its interval and the number of utterances behind it."""

    value: float
    low: float
    high: float
    n: int


class PairedTest(NamedTuple):
    """McNemar's exact test of two models on the same utterances."""

    a_only: int  # utterances only model A gets right
    b_only: int  # utterances only model B gets right
    p_value: float  # two-sided; 1.0 without discordant pairs


class PairedDifference(NamedTuple):
    """Accuracy of A minus accuracy of B on the same utterances, with its bootstrap interval."""

    difference: float
    low: float
    high: float
    n: int


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of ``successes`` out of ``n``; ``(0, 1)`` for n = 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    share = successes / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_estimate(correct: Sequence[bool] | np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """Accuracy of a correct/incorrect vector with its Wilson interval and ``n``."""
    values = np.asarray(correct, dtype=bool)
    n, successes = int(values.size), int(values.sum())
    low, high = wilson_interval(successes, n, confidence)
    return Estimate(successes / n if n else float("nan"), low, high, n)


def proportion_estimate(value: float, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """An accuracy known only as a share of ``n`` (as eval files store it) with its Wilson interval."""
    successes = int(round(value * n))
    low, high = wilson_interval(successes, n, confidence)
    return Estimate(value, low, high, n)


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """A percentile bootstrap over utterances: ``statistic`` of ``values`` (per-utterance rows)
    and the interval of its resampled values; seeded, so a rerun gives the same interval."""
    data = np.asarray(values)
    n = int(data.shape[0])
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(data[rng.integers(0, n, n)]) for _ in range(resamples)], dtype=np.float64)
    tail = (1 - confidence) / 2
    return Estimate(
        float(statistic(data)), float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail)), n
    )


def _paired(
    a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired vectors must be 1-D and of one length, got {a.shape} and {b.shape}")
    return a, b


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips (the smaller tail, doubled)."""
    if n == 0:
        return 1.0
    smaller = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(smaller + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_exact(
    a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray
) -> PairedTest:
    """McNemar's exact test: under equal accuracy each discordant utterance is a fair coin flip."""
    a, b = _paired(a_correct, b_correct)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    return PairedTest(a_only, b_only, binomial_two_sided(a_only, a_only + b_only))


def paired_bootstrap(
    a_correct: Sequence[bool] | np.ndarray,
    b_correct: Sequence[bool] | np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> PairedDifference:
    """Accuracy of A minus B with a percentile bootstrap interval, utterances resampled in pairs."""
    a, b = _paired(a_correct, b_correct)
    differences = a.astype(np.float64) - b.astype(np.float64)
    estimate = bootstrap_interval(differences, np.mean, resamples, confidence, seed)
    return PairedDifference(estimate.value, estimate.low, estimate.high, estimate.n)


def _seed_matrix(values: Sequence | np.ndarray) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"expected a [seeds, utterances] matrix, got shape {matrix.shape}")
    return matrix


def _seeded_draws(matrices: list[np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """``[resamples, len(matrices)]``: each model's mean over resampled seeds (its own) and
    resampled utterances (shared: the pairing)."""
    n = matrices[0].shape[1]
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, len(matrices)))
    for index in range(resamples):
        utterances = rng.integers(0, n, n)
        for column, matrix in enumerate(matrices):
            seeds = rng.integers(0, matrix.shape[0], matrix.shape[0])
            draws[index, column] = matrix[np.ix_(seeds, utterances)].mean()
    return draws


def seeded_bootstrap(
    correct: Sequence | np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Estimate:  # fmt: skip
    """Mean accuracy over seeds of a ``[seeds, utterances]`` correct matrix, with an interval that
    resamples both the seeds and the utterances."""
    matrix = _seed_matrix(correct)
    if matrix.shape[1] == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    draws = _seeded_draws([matrix], resamples, seed)[:, 0]
    tail = (1 - confidence) / 2
    return Estimate(float(matrix.mean()), float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail)),
                    matrix.shape[1])  # fmt: skip


def seeded_paired_bootstrap(
    a_correct: Sequence | np.ndarray, b_correct: Sequence | np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE, seed: int = 0,
) -> PairedDifference:  # fmt: skip
    """Mean accuracy of A minus B over their seeds (``[seeds, utterances]`` each, the same
    utterances), with an interval that resamples each model's seeds and the shared utterances."""
    a, b = _seed_matrix(a_correct), _seed_matrix(b_correct)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"paired models must be scored on the same utterances, got {a.shape[1]} and {b.shape[1]}"
        )
    if a.shape[1] == 0:
        return PairedDifference(float("nan"), float("nan"), float("nan"), 0)
    draws = _seeded_draws([a, b], resamples, seed)
    differences = draws[:, 0] - draws[:, 1]
    tail = (1 - confidence) / 2
    return PairedDifference(float(a.mean() - b.mean()), float(np.quantile(differences, tail)),
                            float(np.quantile(differences, 1 - tail)), a.shape[1])  # fmt: skip


def interval_verdict(difference: PairedDifference) -> str:
    """``"ahead"`` when the interval of A - B lies above 0, ``"behind"`` below 0, else ``"level"``."""
    if difference.low > 0:
        return AHEAD
    if difference.high < 0:
        return BEHIND
    return LEVEL


def verdict(
    a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray, alpha: float = ALPHA
) -> str:
    """``"ahead"`` (A better) or ``"behind"`` where McNemar's exact test gives p < ``alpha``, else ``"level"``."""
    test = mcnemar_exact(a_correct, b_correct)
    if test.p_value >= alpha or test.a_only == test.b_only:
        return LEVEL
    return AHEAD if test.a_only > test.b_only else BEHIND


def format_estimate(estimate: Estimate, percent: bool = True, digits: int = 1) -> str:
    """``97.3% [95.1, 98.6] n=200`` (``percent=False``: the raw values)."""
    if estimate.n == 0:
        return "- (n=0)"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    return (
        f"{scale * estimate.value:.{digits}f}{unit} [{scale * estimate.low:.{digits}f}, "
        f"{scale * estimate.high:.{digits}f}] n={estimate.n}"
    )
