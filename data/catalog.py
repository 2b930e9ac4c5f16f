"""Static facts about the datasets dstbench knows: names, class lists, input sizes, normalisation.

Kept in one table so that error messages, the loaders and ``prepare`` all agree on what a
dataset name means, and so adding a dataset is one entry rather than edits scattered over modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from dstbench.core.errors import ConfigError

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# The fine label names of CIFAR-100 in label order (the order of ``meta['fine_label_names']``,
# which happens to be alphabetical).
CIFAR100_CLASSES: tuple[str, ...] = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
    crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
    lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
    oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
    possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
    spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
    train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Per-channel statistics of the CIFAR training sets' pixels: the one place they live (the loaders
# normalise with them and the CIFAR backbones' timm configs quote them).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class DatasetInfo:
    """What the loaders need to know about a dataset before reading any file."""

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...] | None  # canonical label order; None when it comes from the data
    in_memory: bool  # small enough to decode into an ArrayDataset
    sizes: tuple[int, int] | None = None
    """(training, test) images where the dataset fixes them (CIFAR): a grid checks every run's length
    before reading any file. None: only the files say (image folders; synthetic sets take theirs from
    the config)."""


CATALOG: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 32, CIFAR10_MEAN, CIFAR10_STD, CIFAR10_CLASSES, True, (50_000, 10_000)),
    "cifar100": DatasetInfo("cifar100", 32, CIFAR100_MEAN, CIFAR100_STD, CIFAR100_CLASSES, True, (50_000, 10_000)),
    "imagefolder": DatasetInfo("imagefolder", 224, IMAGENET_MEAN, IMAGENET_STD, None, False),
    # The synthetic generator is built so that pixels are roughly 0.5 +- 0.25; fixed constants keep
    # the normalisation identical whichever loader (memory, torch, ffcv) reads the data.
    "synthetic": DatasetInfo("synthetic", 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), None, True),
}

DATASETS: tuple[str, ...] = tuple(CATALOG)


def dataset_info(name: str) -> DatasetInfo:
    """Look ``name`` up, failing with the list of valid names (a typo is the usual cause)."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}"
        ) from None
