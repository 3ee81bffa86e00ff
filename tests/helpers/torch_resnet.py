"""A torch ResNet with torchvision's exact modules, children order and state-dict names
(ResNet v1.5), randomly initialised, for tests that compare our Flax ResNet or converters with
torch without torchvision or any download. Imports torch when called.

    cls = torchvision_resnet_class(); net = cls(depth)   # depth 18, 34, 50 or 101
    net(x) -> [B, 1000] logits; net.features(x) -> layer4's [B, C, H/32, W/32]
"""

from __future__ import annotations


def torchvision_resnet_class():
  """The ResNet class; its constructor takes the depth."""
  import torch.nn as tnn  # pylint: disable=import-outside-toplevel

  class Basic(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, downsample):
      super().__init__()
      self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(planes)
      self.relu = tnn.ReLU(inplace=True)
      self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.bn2 = tnn.BatchNorm2d(planes)
      self.downsample = downsample

    def forward(self, x):
      y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
      return self.relu(y + (x if self.downsample is None else self.downsample(x)))

  class Bottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, downsample):
      super().__init__()
      self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(planes)
      self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
      self.bn2 = tnn.BatchNorm2d(planes)
      self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
      self.bn3 = tnn.BatchNorm2d(planes * 4)
      self.relu = tnn.ReLU(inplace=True)
      self.downsample = downsample

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
      return self.relu(y + (x if self.downsample is None else self.downsample(x)))

  class TorchvisionResNet(tnn.Module):
    """torchvision's ResNet (v1.5): children conv1, bn1, relu, maxpool, layer1-4, avgpool, fc."""

    def __init__(self, depth: int):
      super().__init__()
      block, layers = {18: (Basic, (2, 2, 2, 2)), 34: (Basic, (3, 4, 6, 3)),
                       50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}[depth]
      self.inplanes = 64
      self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn1 = tnn.BatchNorm2d(64)
      self.relu = tnn.ReLU(inplace=True)
      self.maxpool = tnn.MaxPool2d(3, 2, 1)
      self.layer1 = self._layer(block, 64, layers[0], 1)
      self.layer2 = self._layer(block, 128, layers[1], 2)
      self.layer3 = self._layer(block, 256, layers[2], 2)
      self.layer4 = self._layer(block, 512, layers[3], 2)
      self.avgpool = tnn.AdaptiveAvgPool2d(1)
      self.fc = tnn.Linear(512 * block.expansion, 1000)

    def _layer(self, block, planes, n, stride):
      downsample = None
      if stride != 1 or self.inplanes != planes * block.expansion:
        downsample = tnn.Sequential(
            tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
            tnn.BatchNorm2d(planes * block.expansion))
      blocks = [block(self.inplanes, planes, stride, downsample)]
      self.inplanes = planes * block.expansion
      blocks += [block(self.inplanes, planes, 1, None) for _ in range(n - 1)]
      return tnn.Sequential(*blocks)

    def features(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
      return self.fc(self.avgpool(self.features(x)).flatten(1))

  return TorchvisionResNet
