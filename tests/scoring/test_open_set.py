"""Open-set scores and metrics on inputs whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.scoring.open_set import (
    acceptance_scores,
    auroc,
    energy_score,
    fpr_at_tpr,
    max_softmax_score,
    open_set_summary,
    rejection_by_kind,
    threshold_for_acceptance,
    unknown_class_score,
)

LOGITS = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])  # column 2: unknown


def test_scores_by_hand():
    exp = np.exp
    assert max_softmax_score(LOGITS) == pytest.approx([exp(2) / (exp(2) + 2), exp(3) / (exp(3) + 2)])
    # with an unknown column, the largest in-domain probability (the softmax still spans every column)
    assert max_softmax_score(LOGITS, unknown=2) == pytest.approx([exp(2) / (exp(2) + 2), 1 / (exp(3) + 2)])
    assert energy_score(LOGITS, unknown=2) == pytest.approx([np.log(exp(2) + 1), np.log(2)])
    assert energy_score(LOGITS, temperature=2.0) == pytest.approx(
        [2 * np.log(exp(1) + 2), 2 * np.log(2 + exp(1.5))]
    )
    assert unknown_class_score(LOGITS, 2) == pytest.approx([1 - 1 / (exp(2) + 2), 1 - exp(3) / (exp(3) + 2)])
    assert acceptance_scores(LOGITS, "energy", 2) == pytest.approx(energy_score(LOGITS, 2))
    with pytest.raises(ValueError, match="needs a model with an 'unknown' intent"):
        acceptance_scores(LOGITS, "unknown")
    with pytest.raises(ValueError, match="choose from max_softmax, energy, unknown"):
        acceptance_scores(LOGITS, "entropy")


def test_auroc_counts_pairs_and_ties():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    # pairs (in, out): 2>1 yes, 2 vs 2 tie (half), 0<1, 0<2: (1 + 0.5) / 4
    assert auroc([2, 0], [1, 2]) == pytest.approx(0.375)
    assert math.isnan(auroc([], [1.0]))


def test_threshold_fpr_and_rejections():
    in_scores = np.arange(1, 21, dtype=float)  # 1..20
    # 95% of 20 = 19 accepted: threshold 2; 98%: ceil(19.6) = 20 accepted: threshold 1
    assert threshold_for_acceptance(in_scores, 0.95) == 2.0
    assert threshold_for_acceptance(in_scores, 0.98) == 1.0
    assert threshold_for_acceptance(in_scores, 0.5) == 11.0
    out_scores = np.array([0.5, 1.5, 2.0, 30.0])
    assert fpr_at_tpr(in_scores, out_scores) == 0.5  # 2.0 and 30.0 pass at threshold 2
    kinds = ["noise", "noise", "speech", "speech"]
    assert rejection_by_kind(out_scores, kinds, 2.0) == {"noise": 1.0, "speech": 0.0}
    summary = open_set_summary(in_scores, out_scores, kinds, 2.0)
    assert summary["in_domain_false_rejections"] == 0.05
    assert summary["out_of_domain_rejected"] == 0.5
    # in-domain above each out score: 0.5 -> 20, 1.5 -> 19, 2.0 -> 18 and a tie, 30 -> 0
    assert summary["auroc"] == pytest.approx((20 + 19 + 18.5 + 0) / 80)
    with pytest.raises(ValueError, match="acceptance must be in"):
        threshold_for_acceptance(in_scores, 0.0)
