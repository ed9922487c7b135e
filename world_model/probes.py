"""Probes: how much of a quantity can be read from a feature vector.

A probe is a small supervised model fit on features of some scenes and scored
on features of *other* scenes, so it measures what the features carry in
general, not what can be memorised about the training scenes. Two capacities:

* ``linear``: one linear layer (what a policy's first layer can read directly);
* ``mlp``: one hidden layer of 64 ReLU units (what a small network can read).

Targets are either binary (scored by balanced accuracy, 0.5 = chance, so rare
positives cannot inflate the score) or real vectors (scored by R^2 over all
target columns, 0 = no better than the training mean). :func:`fit_classifier`
takes class labels, one or several per sample (one softmax head each), scored
by accuracy and by balanced accuracy (the mean per-class recall, 1 / classes
for any guess that ignores the features).

Features are standardised with the training split's mean and spread and clipped
to :data:`CLIP` standard deviations, as SB3's ``VecNormalize`` does for the
agents: a sparse feature that is almost constant on the training scenes would
otherwise reach thousands of deviations on a test scene and swamp the probe.
Fitting is full-batch Adam with weight decay, deterministic for a given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

KINDS = ("linear", "mlp")
#: Standardised features are clipped to [-CLIP, CLIP] (VecNormalize's default ``clip_obs``).
CLIP = 10.0


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
        torch.from_numpy(np.clip((train - mean) / std, -CLIP, CLIP).astype(np.float32)),
        torch.from_numpy(np.clip((test - mean) / std, -CLIP, CLIP).astype(np.float32)),
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
    loss_fn: nn.Module | None = None,
    outputs: int | None = None,
) -> tuple[float, nn.Module]:
    """Full-batch Adam; returns the best validation score seen (checked every 10 epochs) and that net.

    ``loss_fn`` and ``outputs`` (the net's output width) replace the defaults set by ``binary``
    (a logistic or squared loss, one output per target column).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        width, outputs = xa.shape[1], outputs or target.shape[1]
        if kind == "linear":
            net: nn.Module = nn.Linear(width, outputs)
        else:
            net = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, outputs))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=weight_decay)
    if loss_fn is None and binary:
        positives = float(target.sum())
        weight = torch.tensor((len(target) - positives) / max(positives, 1.0))  # balance the classes
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=weight)
    elif loss_fn is None:
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


@dataclass(frozen=True)
class ClassifierResult:
    """A classifier probe's held-out scores and its test predictions."""

    accuracy: float
    """Share of correct labels on the test split, over all samples and heads."""
    balanced_accuracy: float
    """Mean over classes (present in the test labels) of their recall; 1 / classes for a guess."""
    train_accuracy: float
    """Accuracy on the training split (the gap shows over-fitting)."""
    predicted: np.ndarray
    """``(M, H)`` int64: the predicted labels of the test split, to score subsets of it."""
    n_train: int
    n_test: int


def balanced_accuracy_multiclass(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels`` (any shapes, compared elementwise)."""
    labels, predicted = np.asarray(labels).ravel(), np.asarray(predicted).ravel()
    if labels.shape != predicted.shape or labels.size == 0:
        raise ValueError(f"labels and predictions must be non-empty and agree, got {labels.shape}, {predicted.shape}")
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in np.unique(labels)]))


class _HeadsCrossEntropy(nn.Module):
    """Softmax cross-entropy of ``(N, H * C)`` logits against ``(N, H)`` labels, H independent heads."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.reshape(-1, self.num_classes), labels.reshape(-1))


def fit_classifier(
    x_train: np.ndarray,
    labels_train: np.ndarray,
    x_test: np.ndarray,
    labels_test: np.ndarray,
    num_classes: int,
    kind: str = "linear",
    epochs: int = 300,
    seed: int = 0,
) -> ClassifierResult:
    """Fit a multi-class probe on ``(x_train, labels_train)`` and score it on ``(x_test, labels_test)``.

    As :func:`fit_probe` (standardised features, the last fifth of the training
    rows held back to choose the weight decay and the epoch, the test split
    touched once), with one softmax head per label column.

    Args:
        x_train: ``(N, F)`` features.
        labels_train: ``(N,)`` or ``(N, H)`` integer labels in ``[0, num_classes)``: H heads.
        x_test: ``(M, F)`` features of other scenes.
        labels_test: Labels of the test split, as ``labels_train``.
        num_classes: Classes per head.
        kind: ``"linear"`` or ``"mlp"``.
        epochs: Most full-batch Adam steps.
        seed: Seed of the weights.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if len(x_train) != len(labels_train) or len(x_test) != len(labels_test):
        raise ValueError(
            f"features and labels disagree: {len(x_train)}/{len(labels_train)}, {len(x_test)}/{len(labels_test)}"
        )
    if len(x_train) < 5 or len(x_test) < 1:
        raise ValueError(f"need at least 5 training and 1 test samples, got {len(x_train)} and {len(x_test)}")
    ya = np.asarray(labels_train).reshape(len(x_train), -1)
    yb = np.asarray(labels_test).reshape(len(x_test), -1)
    if ya.shape[1] != yb.shape[1] or ya.dtype.kind not in "iu" or yb.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be integers with the same heads, got {ya.dtype} {ya.shape}, {yb.dtype} {yb.shape}"
        )
    if num_classes < 2 or min(ya.min(), yb.min()) < 0 or max(ya.max(), yb.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) with num_classes >= 2")
    heads = ya.shape[1]
    cut = len(x_train) - max(1, len(x_train) // 5)
    x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
    xa, xv = _standardise(x_train[:cut], x_train[cut:])
    _, xb = _standardise(x_train[:cut], x_test)
    ya, yv = ya[:cut], ya[cut:]

    def predict(net: nn.Module, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return net(x).reshape(len(x), heads, num_classes).argmax(dim=-1).numpy()

    def validation_accuracy(out: np.ndarray) -> float:
        return float(np.mean(out.reshape(len(out), heads, num_classes).argmax(axis=-1) == yv))

    target = torch.from_numpy(ya.astype(np.int64))
    loss_fn, outputs = _HeadsCrossEntropy(num_classes), heads * num_classes
    fits = [
        _train(xa, target, xv, validation_accuracy, kind, False, epochs, decay, seed, loss_fn, outputs)
        for decay in WEIGHT_DECAYS
    ]
    _, net = max(fits, key=lambda fit: fit[0])
    predicted, train_predicted = predict(net, xb), predict(net, xa)
    return ClassifierResult(
        accuracy=float(np.mean(predicted == yb)),
        balanced_accuracy=balanced_accuracy_multiclass(yb, predicted),
        train_accuracy=float(np.mean(train_predicted == ya)),
        predicted=predicted,
        n_train=len(xa),
        n_test=len(xb),
    )
