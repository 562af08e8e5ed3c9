"""Aggregates of results: curve areas, thresholds, IQM intervals against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxdqn import report


def test_curve_area_is_the_mean_return_over_env_steps():
    steps = np.array([0.0, 10.0, 30.0])
    values = np.array([0.0, 10.0, 10.0])
    # trapezoids: 10 * 5 + 20 * 10 = 250 over 30 env steps
    assert report.curve_area(steps, values) == pytest.approx(250 / 30)


def test_steps_to_threshold_is_the_first_evaluation_at_or_above_it():
    steps = np.array([10.0, 20.0, 30.0, 40.0])
    values = np.array([1.0, 5.0, 4.0, 6.0])
    assert report.steps_to(steps, values, 5.0) == 20.0
    assert math.isnan(report.steps_to(steps, values, 7.0))


def test_iqm_is_the_mean_of_the_middle_half_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    scores = {"a": rng.normal(1.0, 0.1, size=(8, 3)), "b": np.arange(24.0).reshape(8, 3)}
    result = report.iqm_interval(scores, reps=500)
    flat = np.sort(scores["b"].ravel())
    assert result["b"][0] == pytest.approx(flat[6:18].mean())  # 24 scores: drop 6 at each end
    for point, low, high in result.values():
        assert low <= point <= high
    assert result["a"][2] - result["a"][1] < 0.3


def test_normalised_maps_the_range_to_zero_one():
    low, high = np.array([0.0, -500.0]), np.array([500.0, 0.0])
    np.testing.assert_allclose(report.normalised(np.array([[250.0, -500.0]]), low, high), [[0.5, 0.0]])
