"""Linear and MLP probes: fit on some samples, scored on others."""

from __future__ import annotations

import numpy as np
import pytest

from world_model.probes import balanced_accuracy, fit_probe, r_squared


def _data(n, rng, width=20):
    x = rng.standard_normal((n, width))
    return x, x[:, :2] @ np.array([[1.0, -2.0], [0.5, 1.0]])  # two linear targets of two features


def test_linear_probe_recovers_a_linear_target_and_random_features_do_not():
    rng = np.random.default_rng(0)
    (xa, ya), (xb, yb) = _data(400, rng), _data(200, rng)
    assert fit_probe(xa, ya, xb, yb, kind="linear").score > 0.98
    noise_a, noise_b = rng.standard_normal(xa.shape), rng.standard_normal(xb.shape)
    assert fit_probe(noise_a, ya, noise_b, yb, kind="linear").score < 0.1


def test_mlp_probe_reads_what_a_linear_probe_cannot():
    rng = np.random.default_rng(1)
    xa, xb = rng.standard_normal((600, 4)), rng.standard_normal((300, 4))
    ya, yb = np.abs(xa[:, 0]), np.abs(xb[:, 0])  # symmetric: no linear signal
    linear = fit_probe(xa, ya, xb, yb, kind="linear").score
    mlp = fit_probe(xa, ya, xb, yb, kind="mlp", epochs=500).score
    assert linear < 0.1 < 0.7 < mlp


def test_binary_probe_scores_balanced_accuracy_on_rare_positives():
    rng = np.random.default_rng(2)
    xa, xb = rng.standard_normal((500, 6)), rng.standard_normal((500, 6))
    ya, yb = xa[:, 0] > 1.5, xb[:, 0] > 1.5  # about 7% positives
    assert fit_probe(xa, ya, xb, yb, binary=True).score > 0.9
    assert balanced_accuracy(yb, np.zeros_like(yb)) == 0.5  # always "no" is chance, not 93%


def test_a_feature_almost_constant_in_training_cannot_swamp_the_test_scores():
    """A sparse feature (zero on all but one training sample) that fires on test samples is clipped."""
    rng = np.random.default_rng(3)
    (xa, ya), (xb, yb) = _data(400, rng), _data(200, rng)
    sparse_a, sparse_b = np.zeros((len(xa), 1)), np.full((len(xb), 1), 0.5)
    sparse_a[0] = 1e-4
    score = fit_probe(np.hstack([xa, sparse_a]), ya, np.hstack([xb, sparse_b]), yb, kind="linear").score
    assert score > 0.8  # unclipped, the feature sits 10^4 deviations out and the score is far below zero


def test_r_squared_of_the_reference_mean_is_zero():
    y = np.array([[1.0], [2.0], [3.0]])
    assert r_squared(y, np.full_like(y, 2.0), np.array([2.0])) == 0.0
    assert r_squared(y, y, np.array([2.0])) == 1.0


def test_bad_probe_arguments_are_refused():
    x, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match="kind"):
        fit_probe(x, y, x, y, kind="forest")
    with pytest.raises(ValueError, match="disagree"):
        fit_probe(x, y[:3], x, y)
