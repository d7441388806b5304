"""FCN networks: trunks, the head table, heads, upsampling, geometry and net surgery."""

from fcnseg.config import ARCHES, BACKBONES, ModelConfig
from fcnseg.models.backbones import VGG16Classifier, build_backbone
from fcnseg.models.fcn import FCN, build_model

__all__ = ["ARCHES", "BACKBONES", "FCN", "ModelConfig", "VGG16Classifier", "build_backbone", "build_model"]
