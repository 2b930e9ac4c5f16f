"""The synthetic dataset must teach a tiny CNN something quickly: that is its whole purpose.

It stands in for CIFAR in smoke tests and CI, so a pipeline bug (labels shuffled apart from images,
broken normalisation or augmentation) has to show up as accuracy near chance. Budget: a few seconds
of single-threaded CPU training.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn

from dstbench.data import DataConfig, build_data


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: small convolutions gain nothing from more, and on a shared CI machine
    extra threads spin against other jobs and can make this test many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def tiny_cnn(num_classes: int) -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


def test_tiny_cnn_learns_synthetic(one_thread: None) -> None:
    torch.manual_seed(0)
    start = time.monotonic()
    data = build_data(DataConfig("synthetic", None, batch_size=64, seed=0), torch.device("cpu"))
    model = tiny_cnn(data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    epochs = 4
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=epochs * len(data.train))
    for _ in range(epochs):
        model.train()
        for x, y in data.train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
        if time.monotonic() - start > 35:  # a very slow machine: judge what was learnt so far
            break
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in data.test:
            correct += int((model(x).argmax(1) == y).sum())
    accuracy = correct / data.test.num_samples
    assert accuracy > 0.5, f"accuracy {accuracy:.3f} after {time.monotonic() - start:.1f}s (chance 0.1)"
