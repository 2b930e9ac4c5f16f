"""Serve an in-memory uint8 dataset as batches, augmenting on the device.

CIFAR-sized data (150 MB as uint8) fits on any accelerator, so the fastest loader keeps all of it
there and never touches the host again: an epoch is a permutation, and a batch is an index gather
plus the batched crop/flip of :mod:`.augment`. With ``storage_device`` on the CPU the same code
serves a host-resident copy and copies each batch over (the ``loader='torch'`` choice).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from dstbench.core.errors import ConfigError

from .arrays import ArrayDataset
from .auto_augment import PolicyDraws, apply_policy, draw_policy
from .augment import Normalizer, crop_flip, draw_crop_flip, epoch_generator


class TensorLoader:
    """Batches of an :class:`ArrayDataset`; reproducible from ``(seed, epoch)``.

    Training (``train=True``): each epoch shuffles with a generator seeded by (seed, epoch), pads by
    ``pad`` with zeros, takes a random crop of the original size and flips half the images, then
    normalises; ``auto_augment`` (randaugment, trivialaugment) then applies that policy per image
    (:mod:`.auto_augment`). Evaluation (``train=False``): fixed order, no augmentation. The last partial batch is
    kept in both cases so every sample is seen.
    """

    def __init__(
        self,
        data: ArrayDataset,
        batch_size: int,
        device: torch.device,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        train: bool,
        augment: bool = True,
        seed: int = 0,
        channels_last: bool = False,
        pad: int = 4,
        storage_device: torch.device | None = None,
        shard: tuple[int, int] = (0, 1),
        auto_augment: str = "none",
    ) -> None:
        """``shard=(rank, count)``: yield only this rank's contiguous piece of every batch (DDP).

        The batches themselves (order, augmentation) are those of the unsharded loader, so ``count``
        ranks together see exactly the global batches of one process.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        rank, count = shard
        last = len(data) - (math.ceil(len(data) / batch_size) - 1) * batch_size
        if train and count > 1 and last < count:
            raise ConfigError(
                f"the last training batch holds {last} samples, fewer than the {count} ranks; "
                "change --batch-size or the sample count"
            )
        self.shard = (rank, count)
        self.device = device
        self.batch_size = batch_size
        self.num_samples = len(data)
        self.train = train
        self.augment = augment and train
        self.auto_augment = auto_augment if train else "none"
        self.seed = seed
        self.channels_last = channels_last
        self.pad = pad
        self._epoch = 0
        store = storage_device if storage_device is not None else device
        # NCHW once, up front, so per-batch work is a gather and not a transpose.
        images = torch.from_numpy(np.ascontiguousarray(data.images)).permute(0, 3, 1, 2).contiguous()
        self._pin = store.type == "cpu" and device.type == "cuda"
        self.images = images.to(store)
        self.labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64)).to(store)
        self._norm = Normalizer(mean, std, device)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if t.device == self.device:
            return t
        if self._pin:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=self._pin)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        n = self.num_samples
        store = self.images.device
        aug: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        policy: PolicyDraws | None = None
        if self.train:
            # Drawn on the CPU (identical on every device), then moved once per epoch.
            gen = epoch_generator(self.seed, epoch)
            order = torch.randperm(n, generator=gen).to(store)
            if self.augment:
                dy, dx, flip = draw_crop_flip(n, self.pad, gen)
                aug = (dy.to(self.device), dx.to(self.device), flip.to(self.device))
            policy = draw_policy(self.auto_augment, n, gen) if self.auto_augment != "none" else None
        else:
            order = torch.arange(n, device=store)
        for start in range(0, n, self.batch_size):
            lo, hi = self._piece(start, min(start + self.batch_size, n))
            if hi == lo:
                continue  # only an evaluation batch smaller than the rank count leaves a rank empty
            idx = order[lo:hi]
            x = self._to_device(self.images[idx])
            y = self._to_device(self.labels[idx])
            if aug is not None:
                sl = slice(lo, hi)
                x = crop_flip(x, aug[0][sl], aug[1][sl], aug[2][sl], self.pad)
            if policy is not None:
                x = apply_policy(self.auto_augment, x, policy[lo:hi])
            yield self._norm(x, self.channels_last), y

    def _piece(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's contiguous slice of positions ``[start, stop)`` (``torch.tensor_split`` sizes)."""
        rank, count = self.shard
        q, r = divmod(stop - start, count)
        lo = start + rank * q + min(rank, r)
        return lo, lo + q + (1 if rank < r else 0)
