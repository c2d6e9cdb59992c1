"""ResNet-50 (He et al. 2016, "v1.5": stride on the 3×3 convolution) with torchvision's
parameter names, written for wsbench so that torchvision is not a dependency.

Names: ``conv1``, ``bn1``, ``layer1`` … ``layer4`` (``Bottleneck`` blocks with ``conv1/bn1``,
``conv2/bn2``, ``conv3/bn3`` and ``downsample.0`` / ``downsample.1`` on the first block of each
stage), ``fc`` — so a torchvision-style state dict (e.g. a RadImageNet PyTorch port) loads
with ``strict=True``. ``fc`` (an ImageNet-style classifier) is optional here: wsbench replaces
it by its own head, see :mod:`wsbench.predictors.radimgnet`.

Shapes: ``(N, 3, S, S)`` → :meth:`ResNet50.features` ``(N, 2048, S/32, S/32)``.

Example::

    >>> net = ResNet50(num_classes=None)
    >>> net.features(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 2048, 2, 2])
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * EXPANSION
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + idt)


class ResNet50(nn.Module):
    """torchvision-compatible ResNet-50; ``num_classes=None`` builds it without ``fc``."""

    def __init__(self, num_classes: int | None = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (n, w) in enumerate(zip(LAYERS, WIDTHS)):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(cin, w, stride=2 if (j == 0 and i > 0) else 1))
                cin = w * EXPANSION
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # zero-init of each block's last BN: blocks start as identity (helps from-scratch training)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.fc is None:
            return f
        return self.fc(torch.flatten(f.mean((2, 3)), 1))
