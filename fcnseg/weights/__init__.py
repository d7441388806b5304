"""Weights of other layouts renamed to fcnseg's keys by small pure functions.

Caffe (with its own protobuf reader), pytorch-fcn and torchvision-style VGG16 files.
"""
