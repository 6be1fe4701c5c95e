"""95% intervals of held-out success: Wilson for one run's rate, the bootstrap over tasks and seeds."""

from __future__ import annotations

import numpy as np
import pytest

from eval.estimators import bootstrap_interval, pass_at_k, pass_hat_k, success_interval, wilson_interval


@pytest.mark.parametrize("successes, n, interval", [
    # p = 1/2, z = 1.95996: centre (0.5 + z²/20) / (1 + z²/10) = 0.5,
    # half-width z / 1.38415 * sqrt(0.025 + z²/400) = 0.26341
    (5, 10, (0.23659, 0.76341)),
    (0, 10, (0.0, 0.27753)),  # upper bound z² / (n + z²) = 3.84146 / 13.84146
    (10, 10, (0.72247, 1.0)),
    (1, 1, (0.20655, 1.0)),  # lower bound 1 / (1 + z²)
])
def test_wilson_interval_matches_a_hand_computation(successes, n, interval):
    assert wilson_interval(successes, n) == pytest.approx(interval, abs=1e-5)


def test_wilson_interval_narrows_with_more_tasks():
    low_10, high_10 = wilson_interval(5, 10)
    low_100, high_100 = wilson_interval(50, 100)
    assert high_100 - low_100 < (high_10 - low_10) / 2


@pytest.mark.parametrize("successes, n", [(3, 2), (-1, 4), (0, 0)])
def test_wilson_interval_refuses_impossible_counts(successes, n):
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


@pytest.mark.parametrize("confidence, interval", [
    # three tasks scoring 0, 0, 1: a resample holds the 1 j times, j ~ Binomial(3, 1/3), so its mean
    # is 0, 1/3, 2/3, 1 with chances 8/27, 12/27, 6/27, 1/27 (cumulative .296, .741, .963, 1)
    (0.95, (0.0, 1.0)),  # the 97.5% point lies past .963: the top value
    (0.90, (0.0, 2 / 3)),  # the 95% point lies between .741 and .963
    (0.20, (1 / 3, 1 / 3)),  # the 40% and 60% points both lie between .296 and .741
])
def test_bootstrap_over_tasks_matches_the_enumerated_resamples(confidence, interval):
    assert bootstrap_interval([[0, 0, 1]], confidence) == pytest.approx(interval)


def test_bootstrap_over_seeds_resamples_the_runs_too():
    # two seeds that disagree on every task: tasks alone would always average to 1/2; drawing the
    # seeds gives both-first (mean 1, chance 1/4), one of each (1/2) or both-second (0, 1/4)
    assert bootstrap_interval([[1, 1], [0, 0]]) == pytest.approx((0.0, 1.0))
    assert bootstrap_interval([[1, 1], [0, 0]], confidence=0.4) == pytest.approx((0.5, 0.5))
    assert bootstrap_interval([[1, 0], [1, 0]], confidence=0.4) == pytest.approx((0.5, 0.5))


def test_bootstrap_of_equal_scores_is_that_score():
    assert bootstrap_interval([[1, 1, 1], [1, 1, 1], [1, 1, 1]]) == (1.0, 1.0)


def test_bootstrap_is_reproducible_for_a_seed():
    scores = [[i % 3 == 0 for i in range(40)], [i % 2 == 0 for i in range(40)]]
    assert bootstrap_interval(scores, seed=4) == bootstrap_interval(scores, seed=4)


@pytest.mark.parametrize("scores", [[], [[]], [[1, 0], [1]]])
def test_bootstrap_refuses_ragged_or_empty_scores(scores):
    with pytest.raises(ValueError):
        bootstrap_interval(scores)


def test_a_success_rate_gets_wilsons_interval_where_the_bootstrap_would_be_a_point():
    assert success_interval([[0] * 100]) == wilson_interval(0, 100) and wilson_interval(0, 100)[1] > 0.03
    assert success_interval([[1, 0, 0, 1]]) == wilson_interval(2, 4)
    assert success_interval([[1] * 8] * 3) == wilson_interval(8, 8)
    assert success_interval([[1, 0, 1], [0, 0, 1]]) == bootstrap_interval([[1, 0, 1], [0, 0, 1]])
    assert success_interval([[0.5, 0.5]]) == (0.5, 0.5), "partial credit is not a count of successes"


@pytest.mark.parametrize("estimator", [pass_at_k, pass_hat_k])
@pytest.mark.parametrize("n, c, k", [(4, -1, 2), (4, 5, 2), (4, 1, 0), (3, 1, 4)])
def test_both_estimators_refuse_impossible_counts_saying_which(estimator, n, c, k):
    with pytest.raises(ValueError, match="successes must be|k must be"):
        estimator(n, c, k)


def test_wilson_interval_stays_inside_zero_and_one_and_reaches_them_at_the_ends():
    for n in range(1, 60):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
        for successes in range(n + 1):
            low, high = wilson_interval(successes, n)
            assert 0.0 <= low <= successes / n <= high <= 1.0


@pytest.mark.parametrize("successes, n", [(3, 2), (-1, 4), (11, 10), (-3, 10)])
def test_wilson_interval_refuses_impossible_counts_saying_so(successes, n):
    with pytest.raises(ValueError, match="need 0 <= successes <= n"):
        wilson_interval(successes, n)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5])
def test_a_confidence_outside_zero_and_one_is_refused(confidence):
    for interval in (lambda: wilson_interval(5, 10, confidence), lambda: bootstrap_interval([[0, 1, 1]], confidence),
                     lambda: success_interval([[0, 1]], confidence)):
        with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
            interval()


def test_bootstrap_is_reproducible_for_a_seed_and_the_seed_matters():
    scores = np.random.default_rng(0).random((2, 40)).tolist()  # continuous: every resample's mean differs
    assert bootstrap_interval(scores, seed=4) == bootstrap_interval(scores, seed=4)
    assert bootstrap_interval(scores, seed=4) != bootstrap_interval(scores, seed=5)


@pytest.mark.parametrize("scores", [[0, 1, 1], [[[0, 1]]], [[]]])
def test_scores_not_shaped_runs_by_tasks_are_refused_saying_so(scores):
    for interval in (bootstrap_interval, success_interval):
        with pytest.raises(ValueError, match="one or more runs"):
            interval(scores)


@pytest.mark.parametrize("scores", [[[0, 1, 1, 0, 1, 0]], [[0, 1, 1, 0], [1, 0, 1, 1]], [[0.5, 0.25, 1.0, 0.0]]])
def test_a_success_interval_narrows_with_a_lower_confidence(scores):
    low, high = success_interval(scores, 0.5)
    wide_low, wide_high = success_interval(scores)
    assert high - low < wide_high - wide_low
