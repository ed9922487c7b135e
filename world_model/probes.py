"""Probes: how much of a quantity can be read from a feature vector.

A probe is a small supervised model fit on features of some scenes and scored
on features of *other* scenes, so it measures what the features carry in
general, not what can be memorised about the training scenes. Two capacities:

* ``linear``: one linear layer (what a policy's first layer can read directly);
* ``mlp``: one hidden layer of 64 ReLU units (what a small network can read).

Targets are either binary (scored by balanced accuracy, 0.5 = chance, so rare
positives cannot inflate the score) or real vectors (scored by R^2 over all
target columns, 0 = no better than the training mean).

Features are standardised with the training split's mean and spread. Fitting is
full-batch Adam with weight decay, deterministic for a given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

KINDS = ("linear", "mlp")


@dataclass(frozen=True)
class ProbeResult:
    """A probe's held-out score and how much data it saw."""

    score: float
    """Balanced accuracy (binary targets) or R^2 (real targets) on the test split."""
    train_score: float
    """The same on the training split (the gap shows over-fitting)."""
    n_train: int
    n_test: int


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    mean = train.mean(axis=0)
    std = train.std(axis=0) + 1e-6
    return (
        torch.from_numpy(((train - mean) / std).astype(np.float32)),
        torch.from_numpy(((test - mean) / std).astype(np.float32)),
    )


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates (0.5 for a constant guess)."""
    labels, predicted = np.asarray(labels, bool), np.asarray(predicted, bool)
    rates = [np.mean(predicted[labels == value] == value) for value in (True, False) if np.any(labels == value)]
    return float(np.mean(rates))


def r_squared(targets: np.ndarray, predicted: np.ndarray, reference_mean: np.ndarray) -> float:
    """1 - residual / total sum of squares over all columns, the total taken about ``reference_mean``."""
    residual = float(np.sum((targets - predicted) ** 2))
    total = float(np.sum((targets - reference_mean) ** 2))
    return 1.0 - residual / max(total, 1e-12)


WEIGHT_DECAYS = (1e-4, 1e-2, 1.0)


def _train(
    xa: torch.Tensor,
    target: torch.Tensor,
    xv: torch.Tensor,
    score_val,
    kind: str,
    binary: bool,
    epochs: int,
    weight_decay: float,
    seed: int,
) -> tuple[float, nn.Module]:
    """Full-batch Adam; returns the best validation score seen (checked every 10 epochs) and that net."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        width, outputs = xa.shape[1], target.shape[1]
        if kind == "linear":
            net: nn.Module = nn.Linear(width, outputs)
        else:
            net = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, outputs))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=weight_decay)
    if binary:
        positives = float(target.sum())
        weight = torch.tensor((len(target) - positives) / max(positives, 1.0))  # balance the classes
        loss_fn: nn.Module = nn.BCEWithLogitsLoss(pos_weight=weight)
    else:
        loss_fn = nn.MSELoss()
    best, best_state = -np.inf, None
    for epoch in range(1, epochs + 1):
        optimiser.zero_grad()
        loss_fn(net(xa), target).backward()
        optimiser.step()
        if epoch % 10 == 0 or epoch == epochs:
            with torch.no_grad():
                score = score_val(net(xv).numpy())
            if score > best:
                best, best_state = score, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    return best, net


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    kind: str = "linear",
    binary: bool = False,
    epochs: int = 300,
    seed: int = 0,
) -> ProbeResult:
    """Fit a probe on ``(x_train, y_train)`` and score it on ``(x_test, y_test)``.

    The last fifth of the training rows is held back for validation (callers
    order rows by scene, so it holds whole scenes): it picks the weight decay
    (from :data:`WEIGHT_DECAYS`) and the number of epochs, so a wide feature
    vector cannot over-fit its way to a poor test score, and the test split is
    touched once.

    Args:
        x_train: ``(N, F)`` features.
        y_train: ``(N,)`` bools (``binary``) or ``(N,)``/``(N, T)`` reals.
        x_test: ``(M, F)`` features of other scenes.
        y_test: Targets of the test split, as ``y_train``.
        kind: ``"linear"`` or ``"mlp"``.
        binary: Classify (balanced accuracy) instead of regress (R^2).
        epochs: Most full-batch Adam steps.
        seed: Seed of the weights.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"features and targets disagree: {len(x_train)}/{len(y_train)}, {len(x_test)}/{len(y_test)}")
    if len(x_train) < 5 or len(x_test) < 1:
        raise ValueError(f"need at least 5 training and 1 test samples, got {len(x_train)} and {len(x_test)}")
    cut = len(x_train) - max(1, len(x_train) // 5)
    x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
    xa, xv = _standardise(x_train[:cut], x_train[cut:])
    _, xb = _standardise(x_train[:cut], x_test)
    y_all = np.asarray(y_train, np.float64).reshape(len(x_train), -1)
    ya, yv = y_all[:cut], y_all[cut:]
    yb = np.asarray(y_test, np.float64).reshape(len(x_test), -1)
    y_mean, y_std = ya.mean(axis=0), ya.std(axis=0) + 1e-6
    target = torch.from_numpy(((ya - y_mean) / y_std if not binary else ya).astype(np.float32))

    def score(out: np.ndarray, y: np.ndarray) -> float:
        if binary:
            return balanced_accuracy(y[:, 0], out[:, 0] > 0)
        return r_squared(y, out * y_std + y_mean, y_mean)

    fits = [
        _train(xa, target, xv, lambda out: score(out, yv), kind, binary, epochs, decay, seed) for decay in WEIGHT_DECAYS
    ]
    _, net = max(fits, key=lambda fit: fit[0])
    with torch.no_grad():
        out_a, out_b = net(xa).numpy(), net(xb).numpy()
    return ProbeResult(score(out_b, yb), score(out_a, ya), len(xa), len(xb))
