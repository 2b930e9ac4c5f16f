"""CIFAR backbones of the reproduced DST papers, registered in timm's model registry.

Importing this package runs the ``@register_model`` decorators, after which
``timm.create_model("cifar_resnet32_grasp", num_classes=100)`` builds a model and
``timm.list_models("cifar_*")`` lists them. Going through timm's registry rather than a private one lets
training scripts use any timm model and these ones through the same call.

========================  ===================================================  ===================
name                      source                                               conv+FC weights (10)
========================  ===================================================  ===================
``cifar_resnet32``        He et al. 2016, option-A shortcuts, widths 16/32/64          461,872
``cifar_resnet32_grasp``  GraSP/MEST/BiDST ResNet-32, widths 32/64/128               1,855,584
``cifar_vgg19``           GraSP/MEST/BiDST VGG-19 (BN, bias-free convs, 1 FC)       20,024,000
``cifar_mobilenetv2``     kuangliu/pytorch-cifar MobileNet-v2 (used by MEST)         2,261,824
========================  ===================================================  ===================
"""

from __future__ import annotations

# Importing the model modules runs their @register_model decorators.
from . import tiny  # noqa: F401  (registers ``tiny_cnn``, the quick preset's model; not a paper backbone)
from .cifar_mobilenetv2 import CifarMobileNetV2
from .cifar_resnet import CifarResNet
from .cifar_vgg import CifarVGG

__all__ = ["CIFAR_MODELS", "CifarMobileNetV2", "CifarResNet", "CifarVGG"]

CIFAR_MODELS: tuple[str, ...] = ("cifar_resnet32", "cifar_resnet32_grasp", "cifar_vgg19", "cifar_mobilenetv2")
"""The timm names registered by this package."""
