"""A generated image-classification task for smoke tests and CI (no files, no downloads).

Each class is a coloured sinusoidal grating: a base colour, a colour direction along which the
grating oscillates, and a spatial frequency ``(|fx|, |fy|)`` distinct between classes where possible.
Every sample randomises the grating's phase (a translation), its orientation sign (a mirror image,
so horizontal flips keep the label), its contrast and brightness, and adds pixel noise. A small CNN
separates the classes well within a minute on a CPU, yet the noise keeps it from being trivial, which
is what a pipeline test needs: a learning signal that shows up fast.

Everything comes from ``numpy.random.Generator`` streams keyed by the seed, so the same arguments
always give byte-identical arrays.
"""

from __future__ import annotations

import numpy as np

from dstbench.core.errors import ConfigError

from .arrays import ArrayDataset, Splits

# Difficulty knobs (fractions of the 0..1 pixel range): how far class colours spread, the grating's
# amplitude, per-sample contrast range and brightness shift, and the pixel noise.
_BASE_SPREAD = 0.1
_AMPLITUDE = 0.2
_CONTRAST = (0.2, 1.0)
_BRIGHTNESS = 0.15
_NOISE = 0.25

_FREQS = [(fx, fy) for fx in range(4) for fy in range(4) if (fx, fy) != (0, 0)]


class _Templates:
    """Per-class parameters, drawn from the seed only (shared by train and test)."""

    def __init__(self, seed: int, num_classes: int) -> None:
        rng = np.random.default_rng([seed, 0])
        self.base = rng.uniform(0.5 - _BASE_SPREAD, 0.5 + _BASE_SPREAD, size=(num_classes, 3))
        direction = rng.normal(size=(num_classes, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        self.amp = _AMPLITUDE * direction
        if num_classes <= len(_FREQS):
            pick = rng.permutation(len(_FREQS))[:num_classes]
        else:
            pick = rng.integers(0, len(_FREQS), size=num_classes)
        self.freq = np.array([_FREQS[i] for i in pick], dtype=np.float64)  # (C, 2) = (fx, fy)


def _render(t: _Templates, labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    n = labels.shape[0]
    sign: np.ndarray = rng.choice(np.array([-1.0, 1.0]), size=(n,))
    phase: np.ndarray = rng.uniform(0.0, 2 * np.pi, size=(n,))
    contrast: np.ndarray = rng.uniform(_CONTRAST[0], _CONTRAST[1], size=(n,))
    brightness: np.ndarray = rng.uniform(-_BRIGHTNESS, _BRIGHTNESS, size=(n,))
    fx = t.freq[labels, 0] * sign
    fy = t.freq[labels, 1]
    coords = np.arange(size, dtype=np.float64)
    arg = (2 * np.pi / size) * (
        fx[:, None, None] * coords[None, None, :] + fy[:, None, None] * coords[None, :, None]
    ) + phase[:, None, None]
    wave = np.sin(arg) * contrast[:, None, None]  # (N, H, W)
    img = (
        t.base[labels][:, None, None, :]
        + brightness[:, None, None, None]
        + wave[..., None] * t.amp[labels][:, None, None, :]
        + rng.normal(0.0, _NOISE, size=(n, size, size, 3))
    )
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def make_synthetic(
    seed: int = 0,
    num_classes: int = 10,
    image_size: int = 32,
    n_train: int = 2000,
    n_test: int = 500,
) -> Splits:
    """Balanced train/test splits (labels cycle through the classes, then are shuffled)."""
    for what, value, low in (("num_classes", num_classes, 2), ("image_size", image_size, 4),
                             ("n_train", n_train, 1), ("n_test", n_test, 1)):
        if value < low:
            raise ConfigError(f"synthetic {what} must be >= {low}, got {value}")
    templates = _Templates(seed, num_classes)
    classes = [f"class_{i}" for i in range(num_classes)]
    out = []
    for stream, n in ((1, n_train), (2, n_test)):
        rng = np.random.default_rng([seed, stream])
        labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)
        images = _render(templates, labels, image_size, rng)
        out.append(ArrayDataset(images, labels, list(classes)).validate("synthetic"))
    return Splits(out[0], out[1])
