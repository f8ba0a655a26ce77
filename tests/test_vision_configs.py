"""Parameter counts of the vision configs, derived by hand (netlang check builds them without data)."""
from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout

import pytest

from netlang.cli import main

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "vision")


def learnable_parameters(name: str) -> int:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["check", os.path.join(CONFIGS, name), "--json", "--no-data"])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())["actions"]["train"]["parameters"]


@pytest.mark.parametrize("name, expected", [
    # conv 3x3x3x16 + BN; 9 basic blocks (2 convs + 2 BN each) at 16/32/64 channels; two 1x1
    # projections with BN at the stride-2 steps; dense 64x10 + 10
    ("resnet20_cifar10.net", 272_474),
    # the same with 18 blocks per stage
    ("resnet110_cifar10.net", 1_730_714),
    # ResNet-20 on one input channel: the first kernel loses 3*3*2*16 weights
    ("fashion_resnet.net", 272_474 - 288),
    # torchvision's resnet50 count: bottlenecks [3, 4, 6, 3], BN scale+bias, fc 2048x1000 + 1000
    ("resnet50_imagenet.net", 25_557_032),
    # 13 convolutions with bias, fc 25088x4096, 4096x4096, 4096x1000 with biases
    ("vgg16_imagenet.net", 138_357_544),
    # 5*5*1*32+32 + 3*3*32*48+48 + 3*3*48*64+64 + 576*96+96 + 96*10+10
    ("mnist_convnet.net", 98_778),
    # 5*5*1*16 (no bias) + BN 2*16 + 14*14*16*10 + 10
    ("mnist_onehidden_conv_bn.net", 31_802),
])
def test_vision_config_parameter_count(name, expected):
    assert learnable_parameters(name) == expected
