"""The HKBU dlbench networks of configs/bench/ (issue 13's benchmarks) check, with their parameter counts."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from netlang.cli import main

BENCH = Path(__file__).resolve().parents[1] / "configs" / "bench"

# FCN5: 784·2048+2048 + 2048·4096+4096 + 4096·1024+1024 + 1024·10+10.
# AlexNet-R: 5·5·3·32+32 + 5·5·32·32+32 + 5·5·32·64+64 + 4·4·64·10+10.
# LSTM: 10,000·256 embedding + 2 × (4·256·(256+256) + 4·256) + 256·10,000+10,000.
# ResNet-56: netlang's CIFAR ResNet at n = 9 (ResNet-20's 272,474 at n = 3).
COUNTS = {"fcn5_mnist.net": 14_205_962, "alexnet_cifar10.net": 89_578, "lstm_ptb.net": 6_180_624,
          "resnet56_cifar10.net": 855_770}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_dlbench_config_checks_with_its_parameter_count(name):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["check", str(BENCH / name), "--no-data", "--json"]) == 0
    train = json.loads(out.getvalue())["actions"]["train"]
    assert train["parameters"] == COUNTS[name]
    assert train["memory"]["arenaBytes"] > 0
