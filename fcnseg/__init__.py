"""fcnseg: Fully Convolutional Networks for semantic segmentation (Long, Shelhamer & Darrell, CVPR 2015).

The public API: every name below is importable from the top package, ``from fcnseg import train,
Predictor``. Names are resolved on first use (PEP 562), so ``import fcnseg`` costs nothing until one
is touched and the command line starts without importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    # settings and errors
    "ModelConfig": "fcnseg.config", "DataConfig": "fcnseg.config", "TrainConfig": "fcnseg.config",
    "RunConfig": "fcnseg.config", "resolve_run_config": "fcnseg.config",
    "FcnsegError": "fcnseg.errors", "ConfigError": "fcnseg.errors", "CheckpointError": "fcnseg.errors",
    "DataError": "fcnseg.errors",
    # models and surgery
    "FCN": "fcnseg.models.fcn", "build_model": "fcnseg.models.fcn", "VGG16Classifier": "fcnseg.models.backbones",
    "convolutionalize": "fcnseg.models.surgery",
    # weights in and out
    "LoadedModel": "fcnseg.weights.handle", "load_model": "fcnseg.weights.checkpoint", "load_checkpoint": "fcnseg.weights.checkpoint",
    "save_checkpoint": "fcnseg.weights.checkpoint", "fcn_from_classifier": "fcnseg.weights.checkpoint",
    # data
    "build_dataset": "fcnseg.data", "make_synthetic": "fcnseg.data", "Normalization": "fcnseg.data.normalization",
    "PAPER_BGR": "fcnseg.data.normalization", "IMAGENET_RGB": "fcnseg.data.normalization",
    "read_image": "fcnseg.images", "list_images": "fcnseg.images",
    "NYUDDataset": "fcnseg.data.nyud", "SIFTFlowDataset": "fcnseg.data.siftflow",
    "PascalContextDataset": "fcnseg.data.pascal_context", "Head": "fcnseg.data.items", "HeadScores": "fcnseg.scoring",
    # training, evaluation, metrics
    "train": "fcnseg.training.trainer", "TrainResult": "fcnseg.training.trainer",
    "evaluate": "fcnseg.evaluation", "score_folders": "fcnseg.evaluation",
    "dataset_for_model": "fcnseg.evaluation_data", "compare_precisions": "fcnseg.precision_comparison",
    "ConfusionMatrix": "fcnseg.metrics", "segmentation_loss": "fcnseg.losses",
    # inference and deployment
    "Predictor": "fcnseg.inference.predictor", "Prediction": "fcnseg.inference.predictor",
    "predict_folder": "fcnseg.inference.folder", "export_onnx": "fcnseg.inference.export",
    "estimate_forward": "fcnseg.inference.memory", "segment_with_ray": "fcnseg.inference.ray_engine",
    # labelling less: confidence, calibration, which image next
    "calibrate": "fcnseg.calibration", "fit_temperature": "fcnseg.calibration",
    "rank_images": "fcnseg.inference.ranking", "confidence_picture": "fcnseg.inference.confidence",
    # device and precision
    "select_device": "fcnseg.precision", "resolve_precision": "fcnseg.precision",
    "resolve_execution": "fcnseg.precision", "ExecutionPlan": "fcnseg.precision",
    # the ideas, measured (needs matplotlib)
    "explain": "fcnseg.ideas.report", "ExplainOptions": "fcnseg.ideas.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fcnseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
