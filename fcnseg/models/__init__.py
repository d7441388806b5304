"""FCN networks: trunks, the head table, heads, upsampling, geometry and net surgery."""

from fcnseg.config import ARCHES, BACKBONES, RESNET_BACKBONES, ModelConfig
from fcnseg.models.backbones import VGG16Classifier, build_backbone
from fcnseg.models.fcn import FCN, build_model
from fcnseg.models.resnet import ResNetFCN

__all__ = ["ARCHES", "BACKBONES", "FCN", "RESNET_BACKBONES", "ModelConfig", "ResNetFCN", "VGG16Classifier",
           "build_backbone", "build_model"]
