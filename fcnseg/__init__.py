"""fcnseg: Fully Convolutional Networks for semantic segmentation (Long, Shelhamer & Darrell, CVPR 2015).

The public API, re-exported. Functions named like their module stay in it, so that the module
remains importable: ``fcnseg.train.train``, ``fcnseg.evaluate.evaluate``,
``fcnseg.predict_folder.predict_folder``. ``fcnseg.explain`` (which needs matplotlib) is imported on
first use.
"""

from fcnseg.checkpoint import LoadedModel, fcn_from_classifier, load_checkpoint, load_model, save_checkpoint
from fcnseg.config import DataConfig, ModelConfig, RunConfig, TrainConfig, resolve_run_config
from fcnseg.data import build_dataset, make_synthetic
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR, Normalization
from fcnseg.errors import CheckpointError, ConfigError, DataError, FcnsegError
from fcnseg.evaluate import score_folders
from fcnseg.export import export_onnx
from fcnseg.metrics import ConfusionMatrix
from fcnseg.models import FCN, VGG16Classifier, build_model
from fcnseg.models.surgery import convolutionalize
from fcnseg.predict import Prediction, Predictor

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ConfusionMatrix",
    "DataConfig",
    "DataError",
    "FCN",
    "FcnsegError",
    "IMAGENET_RGB",
    "LoadedModel",
    "ModelConfig",
    "Normalization",
    "PAPER_BGR",
    "Prediction",
    "Predictor",
    "RunConfig",
    "TrainConfig",
    "VGG16Classifier",
    "build_dataset",
    "build_model",
    "convolutionalize",
    "export_onnx",
    "fcn_from_classifier",
    "load_checkpoint",
    "load_model",
    "make_synthetic",
    "resolve_run_config",
    "save_checkpoint",
    "score_folders",
]


def __getattr__(name: str):
    if name == "explain":
        import importlib

        return importlib.import_module("fcnseg.explain")
    raise AttributeError(f"module 'fcnseg' has no attribute {name!r}")
