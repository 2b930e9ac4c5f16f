"""Batched CIFAR augmentation and normalisation as tensor ops on the training device.

Per-image Python loops (torchvision transforms in a DataLoader) cost more than a small network's
forward pass on a GPU. Here a whole batch is padded once and every crop (and its mirror image) is one
advanced-indexing gather, so augmentation is a handful of kernel launches per batch.

Random draws come from an explicit ``torch.Generator`` on the CPU, never the global RNG, so batches
are reproducible from (seed, epoch) alone and identical on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch); (0, 1) and (1, 0) must not collide."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, epoch & 0xFFFFFFFF]
    hi, lo = (int(v) for v in np.random.SeedSequence(words).generate_state(2))
    return ((hi << 32) | lo) & (2**63 - 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(epoch_seed(seed, epoch))


def draw_crop_flip(n: int, pad: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample crop offsets ``(dy, dx)`` in ``[0, 2*pad]`` and flip flags, on the CPU."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    return dy, dx, flip


def crop_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              pad: int = 4) -> torch.Tensor:
    """Zero-pad NCHW ``images`` by ``pad``, crop HxW at ``(dy, dx)``, mirror where ``flip``.

    Output pixel ``[i, c, y, x]`` is ``padded[i, c, dy+y, dx+x']`` with ``x' = W-1-x`` when flipped
    (crop first, then flip the crop: the torchvision RandomCrop -> RandomHorizontalFlip order).
    """
    n, c, h, w = images.shape
    dev = images.device
    dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)
    padded = F.pad(images, (pad, pad, pad, pad))
    ys = torch.arange(h, device=dev)
    xs = torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], xs.flip(0)[None, :], xs[None, :]) + dx[:, None]  # (N, W)
    rows = ys[None, :] + dy[:, None]  # (N, H)
    bi = torch.arange(n, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class Normalizer:
    """uint8 NCHW -> float32 ``(x/255 - mean) / std``, with constants cached on the device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        x = images.to(torch.float32).div_(255.0).sub_(self.mean).div_(self.std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
