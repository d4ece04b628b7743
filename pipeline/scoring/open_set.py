"""Open-set scores and metrics: how well a model tells its commands from everything else.

A *score* is high for what looks in-domain; an input is accepted when its score is at least the
threshold. Scores from logits ``[N, C]`` (``unknown``: the column of the ``unknown`` intent,
when the model has one; the in-domain columns are all the others):

- ``max_softmax``: the largest in-domain probability of the softmax over every column
  (Hendrycks & Gimpel);
- ``energy``: ``T * logsumexp(in-domain logits / T)``, the negative free energy (Liu et al.);
- ``unknown``: ``1 - p(unknown)``, for a model trained with an ``unknown`` intent.

Metrics (in-domain = positives, out-of-domain = negatives):

- AUROC: the probability that an in-domain input scores above an out-of-domain one (ties
  count half), the Mann-Whitney statistic;
- FPR at 95% TPR: the share of out-of-domain inputs accepted at the highest threshold that
  still accepts 95% of the in-domain ones;
- at a given threshold: the rejection rate of each out-of-domain kind and overall, and the
  in-domain false rejections (in-domain inputs rejected).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

SCORE_METHODS = ("max_softmax", "energy", "unknown")


def _in_domain_columns(logits: np.ndarray, unknown: int | None) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return logits if unknown is None else np.delete(logits, unknown, axis=1)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def max_softmax_score(logits: np.ndarray, unknown: int | None = None) -> np.ndarray:
    """``[N]`` the largest in-domain probability (softmax over every column)."""
    probabilities = np.exp(_log_softmax(np.asarray(logits, dtype=np.float64)))
    return _in_domain_columns(probabilities, unknown).max(axis=1)


def energy_score(logits: np.ndarray, unknown: int | None = None, temperature: float = 1.0) -> np.ndarray:
    """``[N]`` ``T * logsumexp(in-domain logits / T)``."""
    scaled = _in_domain_columns(logits, unknown) / temperature
    peak = scaled.max(axis=1)
    return temperature * (peak + np.log(np.exp(scaled - peak[:, None]).sum(axis=1)))


def unknown_class_score(logits: np.ndarray, unknown: int) -> np.ndarray:
    """``[N]`` ``1 - p(unknown)``."""
    return 1.0 - np.exp(_log_softmax(np.asarray(logits, dtype=np.float64))[:, unknown])


def acceptance_scores(logits: np.ndarray, method: str, unknown: int | None = None) -> np.ndarray:
    """``[N]`` the ``method``'s score (one of :data:`SCORE_METHODS`).

    Raises:
        ValueError: an unknown method, or ``unknown`` for a model without ``unknown``.
    """
    if method == "max_softmax":
        return max_softmax_score(logits, unknown)
    if method == "energy":
        return energy_score(logits, unknown)
    if method == "unknown":
        if unknown is None:
            raise ValueError("the unknown score needs a model with an 'unknown' intent")
        return unknown_class_score(logits, unknown)
    raise ValueError(f"unknown open-set score {method!r}; choose from {', '.join(SCORE_METHODS)}")


def auroc(in_scores: Sequence[float], out_scores: Sequence[float]) -> float:
    """P(in-domain score > out-of-domain score), ties counting half; NaN when a side is empty."""
    positives, negatives = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    if not len(positives) or not len(negatives):
        return math.nan
    ranks = rankdata(np.concatenate([positives, negatives]))  # ties get their average rank
    positive_ranks = ranks[: len(positives)].sum()
    return float(
        (positive_ranks - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives))
    )


def threshold_for_acceptance(in_scores: Sequence[float], acceptance: float) -> float:
    """The highest threshold that accepts at least ``acceptance`` of ``in_scores`` (``score >= t``)."""
    if not 0 < acceptance <= 1:
        raise ValueError(f"acceptance must be in (0, 1], got {acceptance}")
    scores = np.sort(np.asarray(in_scores, np.float64))[::-1]
    if not len(scores):
        raise ValueError("no in-domain scores to choose a threshold from")
    return float(scores[math.ceil(acceptance * len(scores) - 1e-9) - 1])


def fpr_at_tpr(in_scores: Sequence[float], out_scores: Sequence[float], tpr: float = 0.95) -> float:
    """The share of ``out_scores`` accepted at the threshold that keeps ``tpr`` of ``in_scores``."""
    threshold = threshold_for_acceptance(in_scores, tpr)
    return float((np.asarray(out_scores, np.float64) >= threshold).mean()) if len(out_scores) else math.nan


def rejection_rate(scores: Sequence[float], threshold: float) -> float:
    """The share of ``scores`` below ``threshold`` (NaN for none)."""
    scores = np.asarray(scores, np.float64)
    return float((scores < threshold).mean()) if len(scores) else math.nan


def rejection_by_kind(
    out_scores: Sequence[float], kinds: Sequence[str], threshold: float
) -> dict[str, float]:
    """Per out-of-domain kind (sorted by name), the share of its inputs rejected at ``threshold``."""
    scores, kinds = np.asarray(out_scores, np.float64), np.asarray(kinds)
    return {kind: rejection_rate(scores[kinds == kind], threshold) for kind in sorted(set(kinds.tolist()))}


def open_set_summary(
    in_scores: Sequence[float], out_scores: Sequence[float], out_kinds: Sequence[str], threshold: float
) -> dict:
    """AUROC, FPR at 95% TPR, and at ``threshold``: in-domain false rejections, rejection of
    every out-of-domain input and per kind."""
    return {
        "auroc": auroc(in_scores, out_scores),
        "fpr_at_95_tpr": fpr_at_tpr(in_scores, out_scores, 0.95),
        "threshold": float(threshold),
        "in_domain_false_rejections": rejection_rate(in_scores, threshold),
        "out_of_domain_rejected": rejection_rate(out_scores, threshold),
        "rejected_by_kind": rejection_by_kind(out_scores, out_kinds, threshold),
        "in_domain_utterances": len(in_scores),
        "out_of_domain_utterances": len(out_scores),
    }
