"""The data set option lists, once, as plain tuples: kinds, NYUD modalities, synthetic styles.

Torch-free on purpose: the command parsers and ``fcnseg.config`` offer these words as choices, and
``fcnseg --help`` must answer without importing torch. The data sets check their options against the
same tuples.
"""

from __future__ import annotations

AUTO = "auto"  # not a layout: guess one from the folder (fcnseg.data.build.detect_kind)

# Every layout build_dataset opens, by the name configs and --kind use.
DATASET_KINDS = ("voc", "sbd", "folder", "synthetic", "nyud", "siftflow", "pascal_context")

# NYUD's inputs: each alone, early fusion color+depth (one 4-channel trunk), late fusion color+hha (two trunks).
NYUD_MODALITIES = ("color", "hha", "depth", "color+depth", "color+hha")

# The synthetic scene styles in the VOC layout (fcnseg.data.synthetic holds each one's classes).
SYNTHETIC_STYLES = ("shapes", "blobs", "thin", "rare")
