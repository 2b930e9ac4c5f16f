"""RandAugment and TrivialAugment (``--auto-augment``), torchvision's ops batched on the device.

torchvision's ``transforms.v2.RandAugment`` / ``TrivialAugmentWide`` draw one op for the whole input
they are given, so a batch tensor would get one op for all its images. Here the draws are torchvision's
per image (op uniformly from the policy's augmentation space; RandAugment: 2 ops at magnitude bin 9 of
31; TrivialAugment: 1 op at a uniform bin; a signed op negated with probability 1/2), drawn for the
whole epoch from the loader's seeded generator, and each group of images that drew the same (op,
magnitude) goes through torchvision's own op in one call (``_apply_image_or_video_transform``, which
the v2 classes call themselves). Every op and magnitude of torchvision's policy is covered; only the
grouping is new. The streamed path (imagefolder) uses the v2 classes directly, per PIL image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["AUTO_AUGMENT_POLICIES", "PolicyDraws", "apply_policy", "draw_policy", "policy_transform"]

AUTO_AUGMENT_POLICIES = ("randaugment", "trivialaugment")


def policy_transform(policy: str) -> Any:
    """torchvision's v2 transform for ``policy`` (its defaults: what the batched version reproduces)."""
    from torchvision.transforms import v2

    if policy == "randaugment":
        return v2.RandAugment()
    if policy == "trivialaugment":
        return v2.TrivialAugmentWide()
    raise ValueError(f"unknown auto-augment policy {policy!r}")


@dataclass
class PolicyDraws:
    """Per image and round: op index, magnitude bin, and whether a signed op is negated."""

    ops: torch.Tensor  # (rounds, n) int64
    bins: torch.Tensor  # (rounds, n) int64
    negate: torch.Tensor  # (rounds, n) bool

    def __getitem__(self, rows: slice) -> PolicyDraws:
        return PolicyDraws(self.ops[:, rows], self.bins[:, rows], self.negate[:, rows])


def draw_policy(policy: str, n: int, gen: torch.Generator) -> PolicyDraws:
    """The draws of ``n`` images, as torchvision's forward draws them (one op per round)."""
    transform = policy_transform(policy)
    rounds = getattr(transform, "num_ops", 1)
    ops = torch.randint(0, len(transform._AUGMENTATION_SPACE), (rounds, n), generator=gen)
    if policy == "randaugment":
        bins = torch.full((rounds, n), transform.magnitude, dtype=torch.int64)
    else:
        bins = torch.randint(0, transform.num_magnitude_bins, (rounds, n), generator=gen)
    negate = torch.rand((rounds, n), generator=gen) <= 0.5
    return PolicyDraws(ops, bins, negate)


def _magnitude(transform: Any, name: str, bin_: int, negate: bool, height: int, width: int) -> float:
    magnitudes_fn, signed = transform._AUGMENTATION_SPACE[name]
    magnitudes = magnitudes_fn(transform.num_magnitude_bins, height, width)
    if magnitudes is None:
        return 0.0
    value = float(magnitudes[bin_])
    return -value if signed and negate else value


@torch.no_grad()
def apply_policy(policy: str, images: torch.Tensor, draws: PolicyDraws) -> torch.Tensor:
    """uint8 NCHW ``images`` after each round of their drawn ops (one torchvision call per group)."""
    transform = policy_transform(policy)
    names = list(transform._AUGMENTATION_SPACE)
    height, width = images.shape[-2:]
    out = images.clone()
    for ops, bins, negate in zip(draws.ops.tolist(), draws.bins.tolist(), draws.negate.tolist(), strict=True):
        groups: dict[tuple[str, float], list[int]] = {}
        for i, (op, bin_, neg) in enumerate(zip(ops, bins, negate, strict=True)):
            name = names[op]
            if name != "Identity":
                groups.setdefault((name, _magnitude(transform, name, bin_, neg, height, width)), []).append(i)
        for (name, magnitude), rows in groups.items():
            index = torch.tensor(rows, device=out.device)
            out[index] = transform._apply_image_or_video_transform(
                out[index], name, magnitude, interpolation=transform.interpolation, fill=transform._fill
            )
    return out
