"""torchvision's FCN-ResNet50/101: a dilated ResNet trunk (output stride 8), its FCNHead, bilinear upsampling.

The layers and their names are torchvision's (``torchvision/models/resnet.py``, ``segmentation/fcn.py``),
so that ``fcn_resnet50_coco-*.pth`` / ``fcn_resnet101_coco-*.pth`` load without renaming: ``backbone.conv1``,
``backbone.bn1``, ``backbone.layer1.0.conv1`` ... ``backbone.layer4.2.bn3``, ``backbone.layerN.0.downsample.0/1``,
``classifier.0`` (3x3 conv) ``.1`` (BatchNorm) ``.4`` (1x1 scores), ``aux_classifier.*`` on layer3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.config import ModelConfig

# Bottleneck blocks per stage (He et al. 2016, table 1; torchvision's resnet50/resnet101)
RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)  # the bottleneck width of layer1..layer4; outputs are 4x these
EXPANSION = 4
# torchvision's segmentation models: replace_stride_with_dilation=[False, True, True] -> layer3 and layer4
# keep their resolution and dilate instead; the trunk's output stride is 8.
DILATE_STAGES = (False, False, True, True)
OUTPUT_STRIDE = 8
HEAD_DROPOUT = 0.1  # torchvision's FCNHead


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride on the 3x3): 1x1 -> 3x3 (stride, dilation) -> 1x1, plus shortcut.

    ``x [N, inplanes, H, W] -> [N, 4 * width, H / stride, W / stride]``. The children are registered in
    torchvision's order (conv1, bn1, conv2, bn2, conv3, bn3, relu, downsample), which is also the order in
    which :func:`fcnseg.models.batchnorm.fold_batch_norm` finds each conv before its BatchNorm.
    """

    def __init__(self, inplanes: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        out = width * EXPANSION
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

    def main_path(self) -> list[tuple[str, nn.Module]]:
        """The residual branch's layers in order: its receptive field is the block's (the shortcut's is 1 pixel)."""
        return [("conv1", self.conv1), ("conv2", self.conv2), ("conv3", self.conv3)]


def make_stage(inplanes: int, width: int, blocks: int, stride: int, dilation: int, dilate: bool) -> tuple[nn.Sequential, int]:
    """torchvision's ``ResNet._make_layer``: returns the stage and the dilation of the blocks after its first.

    A dilated stage trades its stride for dilation: the running dilation is multiplied by the stride and the
    stride becomes 1; the FIRST block still gets the previous dilation (torchvision's ``previous_dilation``),
    the others the new one. So with ``[False, True, True]``: layer3's block 0 has dilation 1, blocks 1.. have 2;
    layer4's block 0 has 2, blocks 1.. have 4. Every 3x3 pads by its dilation (sizes kept).
    """
    previous = dilation
    if dilate:
        dilation *= stride
        stride = 1
    downsample = None
    if stride != 1 or inplanes != width * EXPANSION:
        downsample = nn.Sequential(nn.Conv2d(inplanes, width * EXPANSION, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(width * EXPANSION))
    layers = [Bottleneck(inplanes, width, stride, previous, downsample)]
    layers += [Bottleneck(width * EXPANSION, width, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers), dilation


class ResNetTrunk(nn.Module):
    """The dilated ResNet-50/101 trunk: ``x [N, 3, H, W] -> {"layer3": [N, 1024, h, w], "layer4": [N, 2048, h, w]}``.

    ``h = ceil(H / 8)``, ``w = ceil(W / 8)``: conv1 7x7/2 pad 3, maxpool 3x3/2 pad 1 (1/4), layer2 /2 (1/8),
    layer3 and layer4 dilated instead of strided. The ImageNet head (avgpool, fc) is not part of it, as
    torchvision's ``IntermediateLayerGetter`` drops what comes after the last returned layer.
    """

    def __init__(self, depth: str):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)  # 1/2
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # 1/4
        inplanes, dilation = 64, 1
        for i, (width, blocks, dilate) in enumerate(zip(STAGE_WIDTHS, RESNET_BLOCKS[depth], DILATE_STAGES)):
            stride = 1 if i == 0 else 2
            stage, dilation = make_stage(inplanes, width, blocks, stride, dilation, dilate)
            self.add_module(f"layer{i + 1}", stage)  # layer1 1/4, layer2 1/8, layer3 and layer4 1/8 (dilated)
            inplanes = width * EXPANSION

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        layer3 = self.layer3(x)
        return {"layer3": layer3, "layer4": self.layer4(layer3)}

    def main_path(self) -> list[tuple[str, nn.Module]]:
        """Every spatial layer on the longest path from the input to layer4, in order (for the receptive field)."""
        layers = [("conv1", self.conv1), ("maxpool", self.maxpool)]
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            for i, block in enumerate(getattr(self, stage)):
                layers += [(f"{stage}.{i}.{name}", m) for name, m in block.main_path()]
        return layers


def fcn_head(in_channels: int, num_classes: int) -> nn.Sequential:
    """torchvision's ``FCNHead``: 3x3 conv to ``in_channels // 4`` (no bias), BatchNorm, ReLU, Dropout(0.1), 1x1 scores."""
    inter = in_channels // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
        nn.BatchNorm2d(inter),
        nn.ReLU(),
        nn.Dropout(HEAD_DROPOUT),
        nn.Conv2d(inter, num_classes, 1),
    )


class ResNetFCN(nn.Module):
    """torchvision's ``fcn_resnet50`` / ``fcn_resnet101``: ``forward(x float [N, 3, H, W]) -> logits [N, C, H, W]``.

    ``classifier`` scores layer4 at 1/8; ``aux_classifier`` (``config.aux``) scores layer3 and is run by
    :meth:`aux_logits`, and by ``forward`` in training mode once ``train_aux`` is set (training with torchvision's
    auxiliary loss: ``forward`` then returns ``(logits, aux_logits)`` from one pass through the trunk); never in
    eval mode. A freshly built net is initialised as torchvision does: convolutions He-normal (fan_out), BatchNorm
    weight 1 and bias 0, the heads PyTorch's default.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.backbone = ResNetTrunk(config.backbone)
        self.classifier = fcn_head(2048, config.num_classes)
        if config.aux:
            self.aux_classifier = fcn_head(1024, config.num_classes)
        self.offsets: dict[str, int] = {}  # no crops: the scores are resized to the input
        self.train_aux = False  # set by the trainer for the auxiliary loss; see the class docstring
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def receptive_field_layers(self) -> list[tuple[str, nn.Module]]:
        """The spatial layers from the input to the class scores along the longest path, in order."""
        head = [(f"classifier.{i}", m) for i, m in enumerate(self.classifier)]
        return [(f"backbone.{name}", m) for name, m in self.backbone.main_path()] + head

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        scores = self.classifier(features["layer4"])  # [N, C, ceil(H/8), ceil(W/8)]
        # Deviation: the paper upsamples with a (learnable) bilinear-initialised deconvolution and crops;
        # torchvision's FCN resizes bilinearly (align_corners=False) to the input size, and its weights were
        # trained so. Any input size (odd too) gives logits of its own size.
        logits = F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.training and self.train_aux:
            aux = self.aux_classifier(features["layer3"])
            return logits, F.interpolate(aux, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def aux_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's logits ``[N, C, H, W]`` (layer3's scores resized to the input), as torchvision's
        ``result["aux"]``.

        Raises:
            ValueError: the net was built without the auxiliary head.
        """
        if not self.config.aux:
            raise ValueError("this ResNet FCN was built without the auxiliary head (aux: false)")
        scores = self.aux_classifier(self.backbone(x)["layer3"])
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
