"""Inference: the predictor, tiling in bounded memory, the memory model, folder runs and ONNX export."""
