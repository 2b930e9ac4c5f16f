"""Datasets and loaders for dstbench (imported as ``dstbench.data``).

The trainer calls :func:`build_data` with a :class:`DataConfig` and gets a :class:`DataBundle` whose
``train``/``test`` loaders yield ``(float images, int64 labels)`` on the training device. ``prepare``
writes FFCV betons offline. Sources, caching, subsets, augmentation and the FFCV/torch back ends
live in their own modules; ffcv is only imported when it is used.
"""

from .arrays import ArrayDataset, Splits
from .build import LOADERS, DataBundle, DataConfig, build_data, load_splits, prepare
from .catalog import DATASETS, DatasetInfo, dataset_info
from .cifar import load_cifar
from .ffcv_io import FFCVLoader, check_beton, write_beton
from .loader import Loader
from .subset import balanced_subset, class_quotas
from .synthetic import make_synthetic
from .tensor_loader import TensorLoader

__all__ = [
    "DATASETS",
    "LOADERS",
    "ArrayDataset",
    "DataBundle",
    "DataConfig",
    "DatasetInfo",
    "FFCVLoader",
    "Loader",
    "Splits",
    "TensorLoader",
    "balanced_subset",
    "build_data",
    "check_beton",
    "class_quotas",
    "dataset_info",
    "load_cifar",
    "load_splits",
    "make_synthetic",
    "prepare",
    "write_beton",
]
