"""PyTorch versions of netlang's benchmark networks, the references the benchmarks time beside
netlang. Imported only by benchmarks (PyTorch is never a netlang dependency)."""
from __future__ import annotations


def resnet20():
    """configs/vision/resnet20_cifar10.net in PyTorch: 3x3 convolutions without bias, batch norm,
    1x1 projection shortcuts at the stride-2 steps, 8x8 average pooling, dense 10."""
    from torch import nn

    def conv_bn(cin, cout, k, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.branch = nn.Sequential(conv_bn(cin, cout, 3, stride), nn.ReLU(), conv_bn(cout, cout, 3, 1))
            self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 else nn.Identity()

        def forward(self, x):
            return (self.branch(x) + self.shortcut(x)).relu()

    layers = [conv_bn(3, 16, 3, 1), nn.ReLU()]
    for cin, cout, stride in ((16, 16, 1), (16, 32, 2), (32, 64, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1), Block(cout, cout, 1)]
    return nn.Sequential(*layers, nn.AvgPool2d(8), nn.Flatten(), nn.Linear(64, 10))
