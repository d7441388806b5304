"""Inference: the predictor, tiling in bounded memory, the memory model, folder runs, cluster runs and ONNX export."""


def __getattr__(name: str):
    # fcnseg.inference.segment_with_ray, resolved on first use: Ray itself is imported only when a run starts
    if name == "segment_with_ray":
        from fcnseg.inference.ray_engine import segment_with_ray

        return segment_with_ray
    raise AttributeError(f"module 'fcnseg.inference' has no attribute {name!r}")
