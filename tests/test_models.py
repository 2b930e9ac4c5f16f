"""The CIFAR backbones: timm registration, shapes, and exact prunable-weight counts.

Sparsity levels are fractions of the conv+FC weights, so a single extra or missing layer silently shifts
every reported density. The counts below are derived by hand from the papers' architectures, not read
back from the code, so a change to an architecture fails here instead of in a benchmark table.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import timm
import torch
from torch import nn

import dstbench.models
from dstbench.data.catalog import dataset_info
from dstbench.models import CIFAR_MODELS


def create(name: str, **kwargs: Any) -> Any:
    """``timm.create_model`` typed as ``Any``: timm declares ``nn.Module``, hiding the models' attributes."""
    return timm.create_model(name, **kwargs)


def prunable_weight_count(model: nn.Module) -> int:
    """Sum of ``weight.numel()`` over every Conv2d and Linear (no biases, no BatchNorm)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


# Conv weights (all models' convs are bias-free) and the width of the classifier input.
# Total conv+FC weights for C classes = CONV_WEIGHTS + NUM_FEATURES * C.
#
# cifar_resnet32 (He et al. 2016, option-A shortcuts have no weights):
#   stem 3*16*9                                   =     432
#   layer1: 10 convs 16*16*9 = 10 * 2,304         =  23,040
#   layer2: 16*32*9 + 9 * 32*32*9 = 4,608 + 82,944 =  87,552
#   layer3: 32*64*9 + 9 * 64*64*9 = 18,432 + 331,776 = 350,208
#   conv total                                    = 461,232;  FC 64*10 = 640  ->  461,872
#   (+ BN 2*(16 + 10*16 + 10*32 + 10*64) = 2,272 and FC bias 10 -> 464,154 parameters, the paper's 0.46M)
#
# cifar_resnet32_grasp (GraSP/MEST, widths 32/64/128, 1x1 projection shortcuts):
#   stem 3*32*9                                     =       864
#   layer1: 10 * 32*32*9 = 10 * 9,216               =    92,160
#   layer2: 32*64*9 + 9 * 64*64*9 = 18,432 + 331,776 =   350,208
#   layer3: 64*128*9 + 9 * 128*128*9 = 73,728 + 1,327,104 = 1,400,832
#   -> 30 block 3x3 convs                           = 1,843,200
#   shortcuts 32*64 + 64*128 = 2,048 + 8,192        =    10,240
#   conv total                                      = 1,854,304;  FC 128*10 = 1,280  ->  1,855,584
#
# cifar_vgg19 (GraSP/MEST, bias-free convs, one Linear(512, C)):
#   3*64*9 + 64*64*9                = 1,728 + 36,864                =    38,592
#   64*128*9 + 128*128*9            = 73,728 + 147,456              =   221,184
#   128*256*9 + 3 * 256*256*9       = 294,912 + 1,769,472           = 2,064,384
#   256*512*9 + 3 * 512*512*9       = 1,179,648 + 7,077,888         = 8,257,536
#   4 * 512*512*9                                                   = 9,437,184
#   conv total = 20,018,880;  FC 512*10 = 5,120  ->  20,024,000
#
# cifar_mobilenetv2 (kuangliu/pytorch-cifar; per block: expand in*p + depthwise p*9 + project p*out
# [+ shortcut in*out for stride-1 blocks with in != out], p = t*in):
#   stem 3*32*9                                                       =       864
#   (1,16,1,1):  32*32 + 32*9 + 32*16 + sc 32*16                      =     2,336
#   (6,24,2,1):  [16*96 + 96*9 + 96*24 + sc 16*24] + [24*144 + 144*9 + 144*24]
#              = 5,088 + 8,208                                        =    13,296
#   (6,32,3,2):  [3,456 + 1,296 + 144*32] + 2 * [32*192 + 192*9 + 192*32]
#              = 9,360 + 2 * 14,016                                   =    37,392
#   (6,64,4,2):  [6,144 + 1,728 + 192*64] + 3 * [64*384 + 384*9 + 384*64]
#              = 20,160 + 3 * 52,608                                  =   177,984
#   (6,96,3,1):  [24,576 + 3,456 + 384*96 + sc 64*96] + 2 * [96*576 + 576*9 + 576*96]
#              = 71,040 + 2 * 115,776                                 =   302,592
#   (6,160,3,2): [55,296 + 5,184 + 576*160] + 2 * [160*960 + 960*9 + 960*160]
#              = 152,640 + 2 * 315,840                                =   784,320
#   (6,320,1,1): 153,600 + 8,640 + 960*320 + sc 160*320               =   520,640
#   last 1x1 conv 320*1280                                            =   409,600
#   conv total = 2,249,024;  FC 1280*10 = 12,800  ->  2,261,824
CONV_WEIGHTS = {
    "cifar_resnet32": 461_232,
    "cifar_resnet32_grasp": 1_854_304,
    "cifar_vgg19": 20_018_880,
    "cifar_mobilenetv2": 2_249_024,
}
NUM_FEATURES = {"cifar_resnet32": 64, "cifar_resnet32_grasp": 128, "cifar_vgg19": 512, "cifar_mobilenetv2": 1280}
EXPECTED_10_CLASS = {
    "cifar_resnet32": 461_872,
    "cifar_resnet32_grasp": 1_855_584,
    "cifar_vgg19": 20_024_000,
    "cifar_mobilenetv2": 2_261_824,
}


def test_registry_lists_all_models() -> None:
    assert set(CIFAR_MODELS) == set(CONV_WEIGHTS)
    assert set(CIFAR_MODELS) <= set(timm.list_models("cifar_*"))
    assert dstbench.models.CIFAR_MODELS == CIFAR_MODELS


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_ten_class_counts_are_the_hand_derived_ones(name: str) -> None:
    assert CONV_WEIGHTS[name] + NUM_FEATURES[name] * 10 == EXPECTED_10_CLASS[name]


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_create_forward_and_weight_count(name: str, num_classes: int) -> None:
    model = create(name, num_classes=num_classes)
    assert model.num_classes == num_classes
    assert model.num_features == NUM_FEATURES[name]
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == num_classes
    assert prunable_weight_count(model) == CONV_WEIGHTS[name] + NUM_FEATURES[name] * num_classes
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_pretrained_cfg_is_cifar(name: str) -> None:
    model = create(name)
    assert model.num_classes == 10  # the cfg's default
    cfg = model.pretrained_cfg
    assert tuple(cfg["input_size"]) == (3, 32, 32)
    assert cfg["num_classes"] == 10
    assert tuple(cfg["mean"]) == (0.4914, 0.4822, 0.4465)
    assert tuple(cfg["std"]) == dataset_info("cifar10").std  # the loaders' normalisation, defined once
    assert cfg["architecture"] == name
    names = dict(model.named_modules())
    assert isinstance(names[cfg["first_conv"]], nn.Conv2d)
    assert names[cfg["classifier"]] is model.get_classifier()
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (3, 32, 32)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_pretrained_true_raises(name: str) -> None:
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model(name, pretrained=True)


@pytest.mark.parametrize("name", [*CIFAR_MODELS, "tiny_cnn"])
def test_generic_timm_kwargs_are_ignored_and_typos_rejected(name: str) -> None:
    """``tiny_cnn`` used to drop any argument silently (``num_clases=100`` built a 10-class model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = timm.create_model(name, num_classes=7, drop_rate=0.0, drop_path_rate=None)
    assert model.num_classes == 7 and model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    with pytest.warns(UserWarning, match="drop_rate"):
        timm.create_model(name, drop_rate=0.2)
    with pytest.raises(TypeError, match="num_clases"):
        timm.create_model(name, num_clases=100)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_reset_classifier_and_in_chans(name: str) -> None:
    model = create(name, num_classes=10, in_chans=1)
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    model.reset_classifier(100)
    assert model.num_classes == 100 and model.get_classifier().out_features == 100
    with torch.no_grad():
        assert model(x).shape == (2, 100)
        model.reset_classifier(0)
        assert model(x).shape == (2, NUM_FEATURES[name])
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, NUM_FEATURES[name])


def test_resnet32_he_is_the_046m_option_a_network() -> None:
    model = create("cifar_resnet32", num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 464_154  # "0.46M" in He et al., Table 6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 31  # stem + 30 block convs: option-A shortcuts have no parameters
    assert all(m.kernel_size == (3, 3) for m in convs)


def test_resnet32_grasp_structure() -> None:
    model = create("cifar_resnet32_grasp", num_classes=10)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    shortcuts = {n: m for n, m in convs.items() if "shortcut" in n}
    assert {n: tuple(m.weight.shape) for n, m in shortcuts.items()} == {
        "layer2.0.shortcut.0": (64, 32, 1, 1),
        "layer3.0.shortcut.0": (128, 64, 1, 1),
    }
    block_convs = {n: m for n, m in convs.items() if n.startswith("layer") and "shortcut" not in n}
    assert len(block_convs) == 30
    assert all(m.kernel_size == (3, 3) for m in block_convs.values())
    assert sum(m.weight.numel() for m in block_convs.values()) == 1_843_200
    assert convs["conv1"].weight.shape == (32, 3, 3, 3)
    assert isinstance(model.fc, nn.Linear) and model.fc.weight.shape == (10, 128)
    assert all(m.bias is None for m in convs.values())
    # GraSP's weights_init: FC ~ N(0, 0.01) with zero bias, BN weight 1 / bias 0.
    assert float(model.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.2)
    assert torch.count_nonzero(model.fc.bias) == 0
    assert all(
        bool((m.weight == 1).all() and (m.bias == 0).all()) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )


def test_vgg19_layer_names_match_grasp() -> None:
    model = create("cifar_vgg19", num_classes=100)
    conv_names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    # conv/BN/ReLU triplets, one extra index after each of the four max poolings
    assert conv_names == [
        "features.0", "features.3",
        "features.7", "features.10",
        "features.14", "features.17", "features.20", "features.23",
        "features.27", "features.30", "features.33", "features.36",
        "features.40", "features.43", "features.46", "features.49",
    ]  # fmt: skip
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(model.classifier, nn.Linear) and model.classifier.weight.shape == (100, 512)


def test_mobilenetv2_shortcuts() -> None:
    model = create("cifar_mobilenetv2", num_classes=10)
    shortcut_convs = {
        n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "shortcut" in n
    }
    # stride-1 blocks whose width changes: 32->16, 16->24, 64->96, 160->320
    assert shortcut_convs == {
        "layers.0.shortcut.0": (16, 32, 1, 1),
        "layers.1.shortcut.0": (24, 16, 1, 1),
        "layers.10.shortcut.0": (96, 64, 1, 1),
        "layers.16.shortcut.0": (320, 160, 1, 1),
    }
    assert len(model.layers) == 17


def test_output_layer_is_the_models_classifier_not_the_last_registered_layer() -> None:
    """SRigL's classifier exemption reads the model (timm's ``get_classifier()`` or the pretrained
    config's ``classifier``), never the registration order."""
    from torch import nn

    from dstbench.core.layers import find_prunable_layers, output_layer_name

    class HeadFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3))
            self.body = nn.Linear(6, 8)

        def get_classifier(self) -> nn.Module:
            return self.head

    model = HeadFirst()
    assert find_prunable_layers(model)[-1][0] == "body"
    assert output_layer_name(model) == "head.1"  # the last prunable layer inside the classifier
    named = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    named.pretrained_cfg = {"classifier": "0"}  # type: ignore[assignment]
    assert output_layer_name(named) == "0"
    assert output_layer_name(nn.Sequential(nn.Linear(3, 4))) is None  # the model does not say
    for name, expected in [("tiny_cnn", "fc"), ("cifar_resnet32", "fc"), ("cifar_mobilenetv2", "linear")]:
        assert output_layer_name(timm.create_model(name, num_classes=10)) == expected
