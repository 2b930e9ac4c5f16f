"""Named recipes (``--preset``): config fields, plus what they set for each method's hyper-parameters.

Kept apart from :mod:`dstbench.config` (which re-exports them) so each recipe's source can be written
beside it without crowding the config's field declarations. A preset names fields by their config
name; :func:`dstbench.config.resolve_config` types and validates them like any other source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PRESETS", "Preset"]


@dataclass(frozen=True)
class Preset:
    """A named recipe: config fields, plus method hyper-parameters applied when that method runs.

    ``cadence`` sets every method's declared cadence fields (``MaskUpdater.cadence_fields``) by unit,
    plugins included, so a short recipe changes the topology of every method as often;
    ``method_hp`` then sets what one method needs beyond that.
    """

    description: str
    fields: Mapping[str, Any]
    method_hp: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cadence: Mapping[str, int] = field(default_factory=dict)

    def hyperparameters(self, method: str) -> dict[str, Any]:
        """What this preset sets for ``method``: its cadence fields, then its own entries."""
        from dstbench.core.registry import get_method

        cadence = {name: self.cadence[unit] for name, unit in get_method(method).cadence_fields.items() if unit in self.cadence}
        return {**cadence, **self.method_hp.get(method, {})}


_CIFAR = {
    "dataset": "cifar10",
    "batch_size": 64,
    "lr": 0.1,
    "eta_min": 4e-8,
    "momentum": 0.9,
    "epochs": 158,
    "sparsity": 0.9,
    "distribution": "uniform",
    "dense_layers": "mest",
}

PRESETS: dict[str, Preset] = {
    "cifar-resnet32": Preset(
        "BiDST Table A.1, ResNet-32 (GraSP, 1.86M) on CIFAR: 158 epochs, bs 64, cosine 0.1->4e-8, wd 1e-4",
        {**_CIFAR, "model": "cifar_resnet32_grasp", "weight_decay": 1e-4, "warmup_epochs": 0},
    ),
    "cifar-vgg19": Preset(
        "BiDST Table A.1, VGG-19 on CIFAR: 158 epochs, bs 64, cosine 0.1->4e-8, wd 5e-4, 5 warm-up epochs",
        {**_CIFAR, "model": "cifar_vgg19", "weight_decay": 5e-4, "warmup_epochs": 5},
    ),
    "cifar-mobilenetv2": Preset(
        "BiDST Table A.1, MobileNet-v2 on CIFAR: 347 epochs, bs 64, cosine 0.1->4e-8, wd 5e-5, 5 warm-up",
        {**_CIFAR, "model": "cifar_mobilenetv2", "epochs": 347, "weight_decay": 5e-5, "warmup_epochs": 5},
        # Table A.1: MobileNet-v2 searches a larger space, S = 0.08 / 0.05 / 0.04 at s = 0.90 / 0.95 / 0.98.
        method_hp={"bidst": {"search_space_table": "mobilenetv2"}},
    ),
    "imagenet-resnet50": Preset(
        "BiDST Table A.1, ResNet-50 on ImageNet: 148 epochs, bs 1024, cosine 1.024->0, momentum 0.875, "
        "wd 2^-15, 8 warm-up epochs, label smoothing 0.1",
        {"model": "resnet50", "dataset": "imagefolder", "loader": "torch", "epochs": 148, "batch_size": 1024,
         "lr": 1.024, "eta_min": 0.0, "momentum": 0.875, "weight_decay": 3.0517578125e-05, "warmup_epochs": 8,
         "label_smoothing": 0.1, "sparsity": 0.8, "distribution": "uniform", "dense_layers": "first"},
        # Table A.1, ImageNet column: lambda 5e-5, topology updates every 5 epochs.
        method_hp={"bidst": {"lam": 5e-5, "update_frequency": 5}},
    ),
    # Transformer track. Both recipes are AdamW recipes; until the optimizer options land (--opt) they run
    # with the SGD optimizer the other presets use, at the recipe's own lr/wd. To add then: opt adamw,
    # betas (0.9, 0.999), and the augmentations each comment names (see docs/methods.md, "Vision transformers").
    "cifar-vit-tiny": Preset(
        "ViT-Tiny (timm vit_tiny_patch16_224 with img_size 32, patch 4: 64 tokens) on CIFAR, Lee et al. 2021 "
        "(arXiv 2112.13492, aanna0701/SPT_LSA_ViT main.py): 100 epochs, bs 128, lr 1e-3 (AdamW), wd 0.05 "
        "(not on norms/biases), 10 warm-up epochs, cosine to 1e-5, label smoothing 0.1, drop path 0.1, "
        "RandAugment, mixup 0.8 / cutmix 1.0; vit dense layers",
        {"model": "vit_tiny_patch16_224", "model_kwargs": {"img_size": 32, "patch_size": 4, "drop_path_rate": 0.1},
         "dataset": "cifar10", "epochs": 100, "batch_size": 128, "lr": 1e-3, "eta_min": 1e-5, "weight_decay": 0.05,
         "decay_bn_and_bias": False, "warmup_epochs": 10, "label_smoothing": 0.1, "sparsity": 0.9,
         "distribution": "erk", "dense_layers": "vit", "opt": "adamw", "opt_betas": (0.9, 0.999), "opt_eps": 1e-8,
         "auto_augment": "randaugment", "mixup": 0.8, "cutmix": 1.0},
        # Not offered here: the recipe's random erasing 0.25 and repeated augmentation x3; its mixup alpha
        # is 1.0 with mix probability 0.5, taken as DeiT's 0.8 / 1.0 on every batch.
    ),
    "imagenet-deit-small": Preset(
        "DeiT-S (timm deit_small_patch16_224) on ImageNet, Touvron et al. 2021 (facebookresearch/deit main.py): "
        "300 epochs, bs 1024, lr 5e-4*bs/512 = 1e-3 (AdamW), wd 0.05 (not on norms/biases), 5 warm-up epochs, "
        "cosine to 1e-5, label smoothing 0.1, drop path 0.1, RandAugment, mixup 0.8 / cutmix 1.0; vit dense layers",
        {"model": "deit_small_patch16_224", "model_kwargs": {"drop_path_rate": 0.1}, "dataset": "imagefolder",
         "loader": "torch", "epochs": 300, "batch_size": 1024, "lr": 1e-3, "eta_min": 1e-5, "weight_decay": 0.05,
         "decay_bn_and_bias": False, "warmup_epochs": 5, "label_smoothing": 0.1, "sparsity": 0.9,
         "distribution": "erk", "dense_layers": "vit", "opt": "adamw", "opt_betas": (0.9, 0.999), "opt_eps": 1e-8,
         "auto_augment": "randaugment", "mixup": 0.8, "cutmix": 1.0},
        # torchvision's RandAugment stands in for timm's rand-m9-mstd0.5-inc1; not offered here: random
        # erasing 0.25 and repeated augmentation.
    ),
    "quick": Preset(
        "synthetic data and a tiny CNN: about a minute on a laptop CPU",
        {"model": "tiny_cnn", "dataset": "synthetic", "synthetic_train_samples": 2048, "synthetic_test_samples": 512,
         "epochs": 6, "batch_size": 64, "lr": 0.05, "eta_min": 0.0, "weight_decay": 5e-4, "sparsity": 0.9,
         "distribution": "erk", "dense_layers": "none"},
        # Cadences scaled to a 6-epoch, 192-step run so every method updates its topology: every 20
        # steps or every epoch. BiDST learns its scores for 2 epochs between updates; DSR's doubling
        # period starts at 8 steps: 8, 16, 32, 64 over epochs 0-3, none from epoch 4, 7 updates.
        cadence={"steps": 20, "epochs": 1},
        method_hp={"bidst": {"update_frequency": 2}, "dsr": {"period": 8}},
    ),
}
