"""Class-balanced, seeded subsets (``max_train_samples`` / ``max_test_samples``).

Taking the first N samples of a sorted dataset would drop whole classes, and a plain random subset
leaves per-class counts to chance; both make small-budget runs incomparable. Each class instead gets
``n // C`` samples and the first ``n % C`` classes one more, chosen by a seeded generator so the same
seed always picks the same images.
"""

from __future__ import annotations

import numpy as np

from dstbench.core.errors import ConfigError


def class_quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """How many samples to take from each class so that the total is ``min(n, sum(counts))``.

    The ideal split is ``n // C`` each plus one for the first ``n % C`` classes. A class with fewer
    samples than its share gives all it has and the shortfall moves, one at a time in class order,
    to classes that still have spare samples, so the total is still exactly ``n``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    num_classes = counts.shape[0]
    total = int(counts.sum())
    if n >= total:
        return counts.copy()
    quotas = np.full(num_classes, n // num_classes, dtype=np.int64)
    quotas[: n % num_classes] += 1
    quotas = np.minimum(quotas, counts)
    missing = n - int(quotas.sum())
    while missing > 0:
        for c in range(num_classes):
            if missing == 0:
                break
            if quotas[c] < counts[c]:
                quotas[c] += 1
                missing -= 1
    return quotas


def balanced_subset(labels: np.ndarray, num_classes: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced subset of size ``min(n, len(labels))``.

    Indices are returned in ascending order so the subset keeps the source's sample order.
    """
    if n <= 0:
        raise ConfigError(f"subset size must be positive, got {n}")
    labels = np.asarray(labels)
    if n >= labels.shape[0]:
        return np.arange(labels.shape[0], dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    quotas = class_quotas(counts, n)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        # A permutation per class (not one global shuffle) keeps each class's pick independent of
        # how many samples the other classes have.
        chosen.append(rng.permutation(members)[: quotas[c]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
