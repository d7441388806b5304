"""One model scored in each number format it can run in on this machine, on the same images: fp32, bf16, int8."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from fcnseg.errors import ConfigError
from fcnseg.evaluation import evaluate
from fcnseg.precision import cpu_has_native_bf16
from fcnseg.weights.handle import LoadedModel

log = logging.getLogger(__name__)

METRICS = (("mean_iu", "mean IU"), ("pixel_accuracy", "pixel acc."), ("mean_accuracy", "mean acc."),
           ("frequency_weighted_iu", "f.w. IU"))


def compare_precisions(
    model: LoadedModel,
    dataset,
    *,
    int8: LoadedModel | None = None,
    calib_dir: str | Path | None = None,
    tta: tuple = (),
    **evaluate_options,
) -> dict:
    """Score ``model`` (a checkpoint's handle) in fp32 and, where this CPU runs it natively (or on CUDA), bf16
    with PyTorch, and in int8 with ONNX Runtime: ``int8`` (its quantized ``.onnx``, whose class names must be
    the model's) or, with ``calib_dir``, a quantization calibrated on that folder's images.

    Returns:
        ``{"rows": [{"precision", "runtime", **evaluate's result}, ...], "notes": [why a format was left out]}``.
    """
    from fcnseg.data.class_match import match_classes

    if model.onnx_info is not None:
        raise ConfigError(f"{model.path}: --compare-precisions scores a checkpoint in fp32, bf16 and int8; give the "
                          "checkpoint (and its int8 .onnx with --int8-model, or --calib DIR to make one)")
    rows, notes = [], []
    device = model.plan.device if model.plan is not None else None
    precisions = ["fp32"]
    if (device is not None and device.type == "cuda") or cpu_has_native_bf16():
        precisions.append("bf16")
    else:
        notes.append("bf16: not measured, this CPU has no native bf16 (it would be emulated, many times slower)")
    for precision in precisions:
        result = evaluate(model, dataset, device=device, precision=precision, tta=tta, **evaluate_options)
        rows.append({"precision": precision, "runtime": "torch", **result})
    with tempfile.TemporaryDirectory(prefix="fcnseg-int8-") as tmp:
        if int8 is None and calib_dir is not None:
            from fcnseg.inference.quantization import quantize
            from fcnseg.weights.checkpoint import load_model

            report = quantize(model, Path(tmp) / "int8.onnx", calib_dir, check_images=0)
            # not the temporary file's path: it is deleted with the table
            notes.append(f"int8: quantized for this table only ({report.calibration_line()}; "
                         "to keep an int8 model, run fcnseg quantize)")
            int8 = load_model(report.path)
        if int8 is not None:
            if int8.precision != "int8":
                raise ConfigError(f"{int8.path}: an {int8.precision} model; --int8-model takes a quantized .onnx "
                                  "('fcnseg quantize')")
            match_classes(model.class_names, int8.class_names, model_source=str(model.path),
                          data_source=str(int8.path))
            result = evaluate(int8, dataset, tta=tta, **evaluate_options)
            rows.append({"precision": "int8", "runtime": "onnxruntime", **result})
        else:
            notes.append("int8: not measured; give --int8-model FILE (from 'fcnseg quantize') or --calib DIR")
    return {"rows": rows, "notes": notes}


def format_comparison(comparison: dict) -> str:
    """The comparison as a table: one row per format, the four metrics, mean IU against fp32, images/s."""
    rows = comparison["rows"]
    base = rows[0]["mean_iu"]
    lines = [f"{'precision':<10} {'runtime':<12} " + " ".join(f"{label:>10}" for _, label in METRICS)
             + f" {'vs fp32':>8} {'images/s':>9}"]
    for r in rows:
        lines.append(f"{r['precision']:<10} {r['runtime']:<12} " + " ".join(f"{100 * r[key]:>10.2f}" for key, _ in METRICS)
                     + f" {100 * (r['mean_iu'] - base):>+8.2f} {r['images_per_second']:>9.2f}")
    return "\n".join(lines + comparison["notes"])


__all__ = ["compare_precisions", "format_comparison"]
