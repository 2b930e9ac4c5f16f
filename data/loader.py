"""The one interface the trainer sees, whatever reads the data (memory, FFCV, torch DataLoader).

The trainer only needs: batches of ``(float images, long labels)`` already on the device, the number
of batches per epoch (for schedules), the sample count, and a way to say which epoch comes next (so
shuffling and augmentation are reproducible and resumable).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Loader(Protocol):
    """Iterates one epoch of ``(x, y)``: ``x`` float NCHW on the device, ``y`` int64 on the device.

    ``set_epoch(e)`` chooses the epoch the next ``__iter__`` yields; each ``__iter__`` then moves on
    to the following epoch, so a trainer that never calls ``set_epoch`` still gets fresh shuffles.
    """

    num_samples: int
    batch_size: int

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def set_epoch(self, epoch: int) -> None: ...
