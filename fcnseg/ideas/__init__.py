"""The paper's ideas, measured: patch-wise vs dense, FC->conv, receptive fields, upsampling, shift-and-stitch."""

from fcnseg.ideas.classifiers import CLASSIFIER_NAMES, PatchClassifier, build_classifier
from fcnseg.ideas.patchwise import compare as compare_patchwise
from fcnseg.ideas.patchwise import convolutionalized, fc_to_conv, patchwise_scores, window_grid
from fcnseg.ideas.report import ExplainOptions, explain
from fcnseg.ideas.shift_stitch import compare as compare_shift_stitch
from fcnseg.ideas.shift_stitch import rarefy, shift_and_stitch

__all__ = [
    "CLASSIFIER_NAMES",
    "ExplainOptions",
    "PatchClassifier",
    "build_classifier",
    "compare_patchwise",
    "compare_shift_stitch",
    "convolutionalized",
    "explain",
    "fc_to_conv",
    "patchwise_scores",
    "rarefy",
    "shift_and_stitch",
    "window_grid",
]
