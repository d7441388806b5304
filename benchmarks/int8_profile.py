"""Where fcnseg's int8 ONNX graphs spend their time, and how near they run to the CPU's measured matmul rates.

For the small FCN-8s and VGG16 FCN-8s at 500x500 (trained weights; see below), in one run:

1. the CPU's limits: fp32 sgemm (torch) and int8 GEMM (ONNX Runtime ``MatMulInteger`` u8 x s8, and
   ``torch._int_mm`` s8 x s8) on 2048-sided products, GOP/s, interleaved, median;
2. each quantization variant (``fcnseg.inference.quantization.quantize_onnx`` options: which layers stay in
   float, QDQ or QOperator, uint8 or int8 activations, 7- or 8-bit weights) profiled by ONNX Runtime's
   profiler (``SessionOptions.enable_profiling``): per-operator-type time shares, the slowest nodes;
3. ms per image of the fp32 graph and each variant (interleaved, median), the achieved GOP/s (the net's
   multiply-adds x 2, counted on the meta device, over the median) and its fraction of the measured fp32
   and int8 limits;
4. each variant's argmax agreement with the fp32 graph and mean IU against the scenes' masks.

    python benchmarks/int8_profile.py [--models small,vgg16] [--repeats 5] [--variants default,none,...]

Weights: ``benchmarks/cpu_inference.py``'s (the demo's small checkpoint, or a small net trained here on
the synthetic set; a VGG16 FCN-8s whose score layers were fitted on synthetic scenes with a random trunk).
The small net is calibrated on its training set's first images and scored on its validation images; VGG16
on synthetic 500x500 scenes. Prints markdown tables that name the CPU, its flags and its kind.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu_inference as ci  # noqa: E402  (weights and scenes: benchmarks/cpu_inference.py)

from fcnseg.data.synthetic import generate_sample, style_of_classes  # noqa: E402
from fcnseg.ideas.costs import count, on_meta, time_interleaved  # noqa: E402
from fcnseg.inference.export import export_onnx  # noqa: E402
from fcnseg.inference.quantization import quantize_onnx, read_calibration_images, to_input  # noqa: E402
from fcnseg.metrics import ConfusionMatrix  # noqa: E402
from fcnseg.precision import cpu_kind  # noqa: E402
from fcnseg.weights.checkpoint import load_model  # noqa: E402
from fcnseg.weights.onnx_format import available_cores  # noqa: E402

SIZE = 500
# name -> quantize_onnx options; "default" is what `fcnseg quantize` writes.
VARIANTS = {
    "default": {},
    "none": {"keep_fp32": ()},
    "head": {"keep_fp32": ("head",)},
    "8bit": {"reduce_range": False},
    "none-8bit": {"keep_fp32": (), "reduce_range": False},
    "s8act": {"activations": "int8", "reduce_range": False},
    "qop": {"quant_format": "QOperator"},
    "per-tensor": {"per_channel": False},
    "grouped": {"group_upsampling": True},
}
# operator type -> the group the tables report
GROUPS = {
    "QLinearConv": "int8 conv", "ConvInteger": "int8 conv", "QLinearMatMul": "int8 conv",
    "Conv": "float conv", "FusedConv": "float conv", "NhwcFusedConv": "float conv",
    "ConvTranspose": "deconv (upscore)",
    "QuantizeLinear": "quantize/dequantize", "DequantizeLinear": "quantize/dequantize",
    "DynamicQuantizeLinear": "quantize/dequantize",
    "Transpose": "layout (transpose/reorder)", "ReorderInput": "layout (transpose/reorder)",
    "ReorderOutput": "layout (transpose/reorder)", "NhwcMaxPool": "pool", "MaxPool": "pool", "QLinearMaxPool": "pool",
}


# --- the CPU and its limits -----------------------------------------------------------------------


def cpu_line() -> str:
    kind = cpu_kind()
    flags = ", ".join(sorted(kind.flags)) or "none of the relevant ones"
    return (f"CPU: {kind.model}, {available_cores()} cores; flags: {flags}; kind `{kind.name}`"
            f"{f' (capped by {kind.cap})' if kind.cap else ''}; torch {torch.__version__}, "
            f"onnxruntime {__import__('onnxruntime').__version__}")


def _ort_session(proto_bytes: bytes, profile: str | None = None, level: str = "all"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(proto_bytes, options, providers=["CPUExecutionProvider"])


def _matmul_integer_model(n: int) -> bytes:
    """An ONNX graph: uint8 A [n, n] x int8 B [n, n] (an initialiser) -> int32, ``MatMulInteger``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.random.default_rng(0).integers(-127, 128, (n, n), dtype=np.int8), "B")
    node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    graph = helper.make_graph([node], "mmi", [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])], [b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _matmul_float_model(n: int) -> bytes:
    import onnx  # noqa: F401
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "B")
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "mm",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])], [b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def matmul_limits(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GOP/s (2 n^3 per product) of fp32 and int8 matmuls, interleaved, median: the CPU's limits."""
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a8, b8 = torch.randint(-127, 128, (n, n), dtype=torch.int8), torch.randint(-127, 128, (n, n), dtype=torch.int8)
    fns = {"torch fp32 (sgemm)": lambda: a32 @ b32}
    try:
        torch._int_mm(a8[:64, :64].contiguous(), b8[:64, :64].contiguous())
        fns["torch._int_mm s8 x s8"] = lambda: torch._int_mm(a8, b8)
    except (RuntimeError, AttributeError) as e:
        print(f"torch._int_mm is not available on this CPU build ({e})")
    mmi = _ort_session(_matmul_integer_model(n))
    au8 = np.random.default_rng(1).integers(0, 256, (n, n), dtype=np.uint8)
    fns["ORT MatMulInteger u8 x s8"] = lambda: mmi.run(None, {"A": au8})
    mmf = _ort_session(_matmul_float_model(n))
    af = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    fns["ORT MatMul fp32"] = lambda: mmf.run(None, {"A": af})
    times = time_interleaved(fns, repeats=repeats, warmup=1)
    return {name: 2 * n**3 / statistics.median(ts) / 1e9 for name, ts in times.items()}


# --- profiling ------------------------------------------------------------------------------------


def profile(path: Path, x: np.ndarray, runs: int, out_dir: Path) -> dict:
    """Per operator type: kernel milliseconds per run (runs after the first), from ONNX Runtime's profiler;
    and the ten slowest nodes."""
    session = _ort_session(path.read_bytes(), profile=str(out_dir / path.stem))
    for _ in range(runs + 1):
        session.run(None, {"image": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first_end = starts[1] if len(starts) > 1 else float("inf")
    per_type: dict[str, float] = defaultdict(float)
    per_node: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < first_end:
            continue
        op = e.get("args", {}).get("op_name", "?")
        per_type[op] += e["dur"] / 1000 / runs
        per_node[f"{e['name'].removesuffix('_kernel_time')} ({op})"] += e["dur"] / 1000 / runs
    slowest = sorted(per_node.items(), key=lambda kv: -kv[1])[:10]
    return {"per_type": dict(per_type), "slowest": slowest, "total": sum(per_type.values())}


def grouped(per_type: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for op, ms in per_type.items():
        out[GROUPS.get(op, f"other ({op})" if op not in ("Add", "Relu", "Slice", "Cast", "Sub", "Mul", "Div")
                       else "elementwise/crops")] += ms
    return dict(out)


# --- accuracy -------------------------------------------------------------------------------------


def labels_of(session, image: np.ndarray) -> torch.Tensor:
    (logits,) = session.run(None, {"image": to_input(image)})
    return torch.from_numpy(logits[0].argmax(0))


def accuracy(sessions: dict, scenes, num_classes: int) -> dict:
    """Per graph: argmax agreement with the fp32 graph and mean IU on ``scenes`` (items with image, mask)."""
    reference = [labels_of(sessions["fp32"], s.image) for s in scenes]
    out = {}
    for name, session in sessions.items():
        matrix, same, total = ConfusionMatrix(num_classes), 0, 0
        for scene, ref in zip(scenes, reference):
            labels = ref if name == "fp32" else labels_of(session, scene.image)
            matrix.update(labels, torch.from_numpy(np.asarray(scene.mask, dtype=np.int64)))
            same += int((labels == ref).sum())
            total += ref.numel()
        out[name] = {"agreement": same / total, "mean_iu": matrix.compute()["mean_iu"]}
    return out


# --- one net --------------------------------------------------------------------------------------


def bench(label: str, checkpoint: Path, args, tmp: Path, limits: dict, data_dir: Path | None) -> dict:
    loaded = load_model(checkpoint)
    style = style_of_classes(loaded.class_names) or "shapes"
    flops, _ = count(lambda: on_meta(loaded.model.eval())(torch.empty(1, 3, SIZE, SIZE, device="meta")))
    gops = flops / 1e9
    fp32_path = export_onnx(loaded, tmp / f"{label}-fp32.onnx")
    if data_dir is not None:
        calib, scenes = ci.data_set_scenes(data_dir, tmp / f"calib-{label}", args.calib_images)
    else:
        calib = ci.write_calibration(tmp / f"calib-{label}", style, args.calib_images, SIZE)
        scenes = [generate_sample(0, "val", i, style, size=(SIZE, SIZE)) for i in range(args.eval_images)]
    images = read_calibration_images(calib, args.calib_images).images
    paths = {"fp32": fp32_path}
    cache = tmp / f"{label}-ranges.json"
    for name in args.variants.split(","):
        start = time.perf_counter()
        paths[name] = tmp / f"{label}-{name}.onnx"
        quantize_onnx(fp32_path, paths[name], [] if cache.is_file() else images, calibration_cache=cache,
                      **VARIANTS[name])
        print(f"  {label} {name}: quantized in {time.perf_counter() - start:.0f} s", flush=True)
    image = generate_sample(0, "val", 0, style, size=(SIZE, SIZE)).image
    x = to_input(image)
    profiles = {name: profile(path, x, args.profile_runs, tmp) for name, path in paths.items()}
    sessions = {name: _ort_session(path.read_bytes()) for name, path in paths.items()}
    times = time_interleaved({name: (lambda s=s: s.run(None, {"image": x})) for name, s in sessions.items()},
                             repeats=args.repeats, warmup=1)
    acc = accuracy(sessions, scenes, loaded.config.num_classes)
    return {"label": label, "gops": gops, "profiles": profiles, "acc": acc,
            "ms": {name: statistics.median(ts) * 1000 for name, ts in times.items()}, "limits": limits}


def print_net(result: dict, limits: dict) -> None:
    fp32_limit = limits["torch fp32 (sgemm)"]
    int8_limit = max(v for k, v in limits.items() if "fp32" not in k)
    label, gops = result["label"], result["gops"]
    print(f"\n### {label}, {SIZE}x{SIZE}: {gops:.1f} GOP per image\n")
    print("| graph | ms / image (median) | vs fp32 graph | GOP/s | of fp32 limit | of int8 limit | agreement with fp32 | mean IU |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ms in result["ms"].items():
        rate = gops / (ms / 1000)
        acc = result["acc"][name]
        print(f"| {name} | {ms:.1f} | {result['ms']['fp32'] / ms:.2f}x | {rate:.0f} | {rate / fp32_limit:.0%} | "
              f"{rate / int8_limit:.0%} | {acc['agreement']:.2%} | {acc['mean_iu'] * 100:.2f} |")
    groups = sorted({g for p in result["profiles"].values() for g in grouped(p["per_type"])})
    print(f"\nKernel time per image from ONNX Runtime's profiler (ms, share), {label}:\n")
    print("| graph | " + " | ".join(groups) + " | total |")
    print("|---|" + "---|" * (len(groups) + 1))
    for name, p in result["profiles"].items():
        g = grouped(p["per_type"])
        cells = " | ".join(f"{g.get(k, 0):.1f} ({g.get(k, 0) / p['total']:.0%})" for k in groups)
        print(f"| {name} | {cells} | {p['total']:.1f} |")
    for name in ("default", *[n for n in result["profiles"] if n not in ("default", "fp32")][:1]):
        if name in result["profiles"]:
            p = result["profiles"][name]
            print(f"\nslowest nodes, {label} {name}: " + "; ".join(f"{n} {ms:.1f} ms" for n, ms in p["slowest"]))
            print(f"operator types, {label} {name}: " + ", ".join(
                f"{op} {ms:.1f}" for op, ms in sorted(p["per_type"].items(), key=lambda kv: -kv[1])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="small,vgg16")
    parser.add_argument("--variants", default="default,grouped,none,8bit,s8act,qop",
                        help=f"comma list of: {', '.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--profile-runs", type=int, default=3, help="profiled runs after one warm-up")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--eval-images", type=int, default=8, help="synthetic scenes scored for VGG16")
    parser.add_argument("--small-checkpoint", type=Path)
    parser.add_argument("--vgg-checkpoint", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    print(f"load average {'/'.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    limits = matmul_limits()
    print("\n| matmul, 2048 x 2048 x 2048 | GOP/s (median) |\n|---|---|")
    for name, rate in limits.items():
        print(f"| {name} | {rate:.0f} |")
    results = []
    with tempfile.TemporaryDirectory(prefix="fcnseg-int8-profile-") as tmp:
        for name in args.models.split(","):
            if name == "small":
                data = ci.DEFAULT_SMALL_DATA
                results.append(bench("small FCN-8s", ci.small_checkpoint(args.small_checkpoint, 400), args, Path(tmp),
                                     limits, data if (data / "ImageSets").is_dir() else None))
            else:
                results.append(bench("VGG16 FCN-8s", ci.vgg_checkpoint(args.vgg_checkpoint, 60), args, Path(tmp),
                                     limits, None))
            print_net(results[-1], limits)
    print(f"\n{cpu_line()}\nload average at the end {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
