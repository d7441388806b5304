"""Weights of other layouts renamed to fcnseg's keys by small pure functions: Caffe (with its protobuf reader), pytorch-fcn, torchvision VGG16."""
