"""The in-memory dataset type every small source decodes into.

Small image-classification sets (CIFAR, synthetic) fit in memory as raw uint8 pixels. Keeping them
in one plain container lets the cache, the subset logic, the tensor loader and the FFCV writer
share a single representation instead of each knowing about every source format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dstbench.core.errors import DataError


@dataclass
class ArrayDataset:
    """Decoded images plus labels.

    ``images`` is uint8 NHWC with 3 channels (the layout images are decoded in, and what FFCV
    writes), ``labels`` is int64 in ``[0, len(classes))``; ``classes[i]`` names label ``i``.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def validate(self, where: str) -> "ArrayDataset":
        """Check shapes/dtypes/label range; ``where`` names the source in the error message.

        Done once at the boundary (after decoding or reading a cache) so the loaders can index
        without defensive checks, and so a malformed source fails with a message instead of a
        CUDA index error in the middle of training.
        """
        im, lb = self.images, self.labels
        if im.dtype != np.uint8 or im.ndim != 4 or im.shape[3] != 3:
            raise DataError(
                f"{where}: images must be uint8 of shape (N, H, W, 3), got {im.dtype} {im.shape}"
            )
        if lb.ndim != 1 or lb.shape[0] != im.shape[0]:
            raise DataError(f"{where}: {lb.shape[0] if lb.ndim else 0} labels for {im.shape[0]} images")
        if lb.dtype != np.int64:
            raise DataError(f"{where}: labels must be int64, got {lb.dtype}")
        if not self.classes:
            raise DataError(f"{where}: dataset has no classes")
        if lb.size and (int(lb.min()) < 0 or int(lb.max()) >= len(self.classes)):
            raise DataError(
                f"{where}: labels span [{int(lb.min())}, {int(lb.max())}] but there are "
                f"{len(self.classes)} classes"
            )
        return self

    def select(self, indices: np.ndarray) -> "ArrayDataset":
        """Rows ``indices`` (a copy, so the full decoded set can be freed)."""
        return ArrayDataset(self.images[indices], self.labels[indices], list(self.classes))


@dataclass
class Splits:
    """The train and test parts of one source; what a decoder or cache produces."""

    train: ArrayDataset
    test: ArrayDataset
