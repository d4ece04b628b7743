"""pipeline.scoring.intervals: Wilson intervals, the utterance bootstrap, McNemar's exact test, the
paired bootstrap and the verdict, against scipy and values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from pipeline.scoring.intervals import (
    Estimate,
    accuracy_estimate,
    binomial_two_sided,
    bootstrap_interval,
    format_estimate,
    interval_verdict,
    mcnemar_exact,
    paired_bootstrap,
    proportion_estimate,
    seeded_bootstrap,
    seeded_paired_bootstrap,
    verdict,
    wilson_interval,
)


@pytest.mark.parametrize("successes,n", [(0, 10), (8, 10), (10, 10), (97, 100), (7, 50), (194, 200), (1, 1)])
def test_wilson_matches_scipy(successes, n):
    low, high = wilson_interval(successes, n)
    expected = binomtest(successes, n).proportion_ci(0.95, method="wilson")
    assert low == pytest.approx(expected.low, abs=1e-9) and high == pytest.approx(expected.high, abs=1e-9)


def test_wilson_known_values():
    # worked by hand: p = 0.8, n = 10, z = 1.959964; centre (0.8 + z^2/20) / (1 + z^2/10) = 0.71675,
    # half-width z sqrt(0.016 + z^2/400) / (1 + z^2/10) = 0.22657
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-4) and high == pytest.approx(0.94334, abs=1e-4)
    # ten utterances all right still leave a 28-point interval
    assert wilson_interval(10, 10)[0] == pytest.approx(0.72246, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_accuracy_estimate_and_format():
    estimate = accuracy_estimate([True] * 97 + [False] * 3)
    assert estimate.value == pytest.approx(0.97) and estimate.n == 100
    assert estimate.low < 0.97 < estimate.high
    assert format_estimate(estimate) == "97.0% [91.5, 99.0] n=100"
    assert proportion_estimate(0.97, 100) == estimate
    assert format_estimate(Estimate(float("nan"), 0, 1, 0)) == "- (n=0)"


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (1, 0), (7, 1), (10, 2), (3, 12), (20, 20), (40, 25)])
def test_mcnemar_matches_the_exact_binomial_test(a_only, b_only):
    concordant = 30
    a = np.array([True] * a_only + [False] * b_only + [True] * concordant + [False] * 5)
    b = np.array([False] * a_only + [True] * b_only + [True] * concordant + [False] * 5)
    test = mcnemar_exact(a, b)
    assert (test.a_only, test.b_only) == (a_only, b_only)
    expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert test.p_value == pytest.approx(expected, rel=1e-12)


def test_binomial_by_hand():
    # 7 against 1: P(X <= 1 | n=8) = 9/256, two-sided 18/256
    assert binomial_two_sided(7, 8) == pytest.approx(18 / 256)
    assert binomial_two_sided(4, 8) == 1.0


def test_verdict_needs_significance():
    # the case: 3 discordant errors on 10 utterances are no evidence
    a = np.array([True] * 10)
    b = np.array([True] * 7 + [False] * 3)
    assert verdict(a, b) == "level"
    # 12 against 1 on 200 utterances is (p = 0.0034)
    a = np.array([True] * 12 + [False] * 1 + [True] * 180 + [False] * 7)
    b = np.array([False] * 12 + [True] * 1 + [True] * 180 + [False] * 7)
    assert verdict(a, b) == "ahead" and verdict(b, a) == "behind"
    assert verdict(a, b, alpha=0.001) == "level"
    with pytest.raises(ValueError):
        verdict(a, b[:-1])


def test_bootstrap_intervals_are_seeded_and_cover_the_statistic():
    rng = np.random.default_rng(1)
    values = rng.normal(2.0, 1.0, 400)
    estimate = bootstrap_interval(values, resamples=500)
    assert estimate == bootstrap_interval(values, resamples=500)
    assert estimate.value == pytest.approx(values.mean())
    assert estimate.low < estimate.value < estimate.high
    # the standard error of a mean of 400 draws is 0.05: the 95% interval is about +-0.1
    assert 0.15 < estimate.high - estimate.low < 0.25

    a = np.array([True] * 90 + [False] * 10)
    b = np.array([True] * 80 + [False] * 20)
    difference = paired_bootstrap(a, b, resamples=500)
    assert difference.difference == pytest.approx(0.1) and difference.n == 100
    assert difference.low > 0 and difference.high < 0.2


def test_seeded_bootstraps_hold_the_seed_spread():
    rng = np.random.default_rng(2)
    one_seed = rng.random(300) < 0.9
    # one seed: the plain utterance bootstrap, close to Wilson
    estimate = seeded_bootstrap(one_seed[None, :], resamples=1000)
    low, high = wilson_interval(int(one_seed.sum()), 300)
    assert estimate.value == pytest.approx(one_seed.mean()) and estimate.n == 300
    assert estimate.low == pytest.approx(low, abs=0.015) and estimate.high == pytest.approx(high, abs=0.015)
    # three seeds that disagree (70%, 90%, 100%): wider than any one seed's interval
    seeds = np.stack([rng.random(300) < p for p in (0.7, 0.9, 1.0)])
    spread = seeded_bootstrap(seeds, resamples=1000)
    assert spread.high - spread.low > 2 * (high - low)

    # paired: B is A with 30 of its right answers turned wrong, on every seed
    a = np.stack([rng.random(300) < 0.9 for _ in range(3)])
    b = a.copy()
    b[:, :30] = False
    difference = seeded_paired_bootstrap(a, b, resamples=1000)
    assert difference.difference == pytest.approx(a.mean() - b.mean())
    assert interval_verdict(difference) == "ahead"
    assert interval_verdict(seeded_paired_bootstrap(b, a, resamples=1000)) == "behind"
    assert interval_verdict(seeded_paired_bootstrap(a, a, resamples=1000)) == "level"
    with pytest.raises(ValueError, match="same utterances"):
        seeded_paired_bootstrap(a, b[:, :10])
