"""PyTorch, ONNX Runtime and OpenVINO side by side on this CPU, fp32 and int8, and what ``--runtime auto`` picks.

    python benchmarks/runtimes.py [--nets small,vgg16] [--size 500] [--rounds 3] [--num-calib 4]
                                  [--memory-sizes 256,512,1000]

Per net (the small net of the small-cpu preset and VGG16 FCN-8s, random weights: timing does not depend on
their values) on one ``size`` x ``size`` RGB image: PyTorch in each precision the CPU runs natively and both
layouts (:class:`fcnseg.inference.runtime.TorchNet`), ONNX Runtime and OpenVINO fp32 on the export, and int8:
ONNX Runtime's QDQ file (``fcnseg quantize``'s default) run by both runtimes, and NNCF's
(``fcnseg quantize --runtime openvino``) run by OpenVINO. The paths are interleaved round by round (the machine
may be shared: the load hits all alike) and the median is printed with the labels' agreement with PyTorch fp32.
Then ``--runtime auto``'s own choice on the same image (:func:`fcnseg.inference.runtime_choice.choose_runtime`,
a fresh cache), for the checkpoint and for the int8 QDQ file (ONNX Runtime against OpenVINO). ``--memory-sizes`` measures OpenVINO's peak RSS per size in a fresh process, against the memory
model's terms (:data:`fcnseg.inference.memory.OV_WEIGHT_FACTOR`, :data:`~fcnseg.inference.memory.OV_ACTIVATION_FACTOR`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_inference import cpu_description  # noqa: E402
from cpu_paths import LABELS, NETS, variants  # noqa: E402

from fcnseg.data.normalization import IMAGENET_RGB  # noqa: E402
from fcnseg.data.synthetic import generate_sample  # noqa: E402
from fcnseg.inference.export import export_onnx  # noqa: E402
from fcnseg.inference.quantization import DEFAULT_KEEP_FP32, quantize_onnx  # noqa: E402
from fcnseg.inference.runtime import OrtNet, TorchNet  # noqa: E402
from fcnseg.inference.runtime_choice import choose_runtime  # noqa: E402
from fcnseg.models.fcn import build_model  # noqa: E402
from fcnseg.precision import cpu_kind  # noqa: E402
from fcnseg.weights.checkpoint import load_model, save_checkpoint  # noqa: E402
from fcnseg.weights.openvino_net import openvino_available, openvino_version  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def onnx_net(path: Path, engine: str) -> OrtNet:
    handle = load_model(path)
    handle.engine = engine
    return OrtNet(handle)


def bench_net(name: str, args, tmp: Path) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(NETS[name]).eval()
    checkpoint = tmp / f"{name}.pt"
    save_checkpoint(checkpoint, model, model.config, [f"class_{i}" for i in range(model.config.num_classes)], IMAGENET_RGB)
    image = generate_sample(0, "val", 0, "shapes", size=(args.size, args.size)).image
    calib = [generate_sample(1, "train", i, "shapes", size=(256, 256)).image for i in range(args.num_calib)]
    fp32 = export_onnx(load_model(checkpoint), tmp / f"{name}-fp32.onnx")
    paths: dict[str, object] = {}
    for precision, layout in variants():
        paths[f"torch {precision} {layout}"] = TorchNet(load_model(checkpoint).prepare("cpu", precision, layout))
    paths["onnxruntime fp32"] = onnx_net(fp32, "onnxruntime")
    ov = openvino_available()
    if ov:
        paths["openvino fp32"] = onnx_net(fp32, "openvino")
    if args.num_calib:
        start = time.perf_counter()
        qdq = tmp / f"{name}-int8.onnx"
        quantize_onnx(fp32, qdq, calib, keep_fp32=DEFAULT_KEEP_FP32)
        print(f"  {name}: ONNX Runtime quantization {time.perf_counter() - start:.0f} s", flush=True)
        paths["onnxruntime int8 (QDQ)"] = onnx_net(qdq, "onnxruntime")
        if ov:
            paths["openvino int8 (QDQ)"] = onnx_net(qdq, "openvino")
            from fcnseg.inference.openvino_quantization import quantize_nncf
            from fcnseg.weights.onnx_format import read_info

            start = time.perf_counter()
            nncf_path = tmp / f"{name}-nncf.onnx"
            metadata = {**read_info(qdq).metadata}
            quantize_nncf(fp32, nncf_path, calib, keep_fp32=DEFAULT_KEEP_FP32, metadata=metadata)
            print(f"  {name}: NNCF quantization {time.perf_counter() - start:.0f} s", flush=True)
            paths["openvino int8 (NNCF)"] = onnx_net(nncf_path, "openvino")
    batch = torch.from_numpy(image)[None]
    labels, times = {}, {k: [] for k in paths}
    for key, net in paths.items():  # warm-up: first-call costs (weight packing, compiling) are not timed
        labels[key] = net(batch)[0].max(0).indices
    for _ in range(args.rounds):
        for key, net in paths.items():
            start = time.perf_counter()
            net(batch)
            times[key].append(time.perf_counter() - start)
        print(f"  {name}: round done", flush=True)
    reference = labels["torch fp32 contiguous"]
    rows = []
    base = statistics.median(times["torch fp32 contiguous"])
    for key in paths:
        median = statistics.median(times[key])
        rows.append({"net": LABELS[name], "path": key, "median_s": median, "speedup": base / median,
                     "agreement": float((labels[key] == reference).float().mean())})
    del paths
    start = time.perf_counter()
    choice = choose_runtime(load_model(checkpoint), image, runtime="auto", folder=tmp / "cache")
    rows.append({"net": LABELS[name], "path": f"auto: {choice.chosen.label}", "median_s": choice.times[choice.chosen.label],
                 "speedup": float("nan"), "agreement": choice.agreement[choice.chosen.label],
                 "why": choice.why, "choice_s": time.perf_counter() - start, "model": "checkpoint"})
    if args.num_calib:  # the int8 file: ONNX Runtime against OpenVINO, held against ONNX Runtime's labels
        start = time.perf_counter()
        choice = choose_runtime(load_model(qdq), image, runtime="auto", folder=tmp / "cache")
        rows.append({"net": LABELS[name], "path": f"auto (int8 file): {choice.chosen.label}",
                     "median_s": choice.times.get(choice.chosen.label, float("nan")), "speedup": float("nan"),
                     "agreement": float((onnx_net(qdq, choice.chosen.runtime)(batch)[0].max(0).indices == reference)
                                        .float().mean()),
                     "why": choice.why, "choice_s": time.perf_counter() - start, "model": "int8 .onnx file"})
    if args.memory_sizes and ov:
        sizes = [int(v) for v in args.memory_sizes.split(",")]
        rows[-1]["memory"] = measure_memory(fp32, sizes) + (measure_memory(qdq, sizes) if args.num_calib else [])
    return rows


MEMORY_PROBE = """
import sys, numpy as np
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key + ':'))
from fcnseg.weights.checkpoint import load_model
from fcnseg.inference.runtime import OrtNet
import openvino, onnx  # the libraries' own memory is the interpreter's, not the model's
before = status('VmRSS')
handle = load_model(sys.argv[1]); handle.engine = 'openvino'
net = OrtNet(handle)
size = int(sys.argv[2])
net.onnx.compiled((1, 3, size, size))
loaded = status('VmRSS')
pixels = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
open('/proc/self/clear_refs', 'w').write('5')  # reset the high-water mark
base = status('VmRSS')
net(pixels)
print(loaded - before, status('VmHWM') - base)
"""


def measure_memory(path: Path, sizes: list[int]) -> list[dict]:
    """Per size: OpenVINO's RSS for the compiled model and the peak RSS rise of one forward (fresh process each)."""
    net = onnx_net(path, "openvino")
    rows = []
    for size in sizes:
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(size)], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        weights_rss, forward_rss = (int(v) for v in out.stdout.split()[-2:])
        estimate = net.estimate(size, size)
        row = {"file": path.name, "size": size, "weights_rss": weights_rss, "forward_rss": forward_rss,
               "weight_ratio": (weights_rss - 0) / net.weight_bytes, "activation_ratio": forward_rss / estimate.activations,
               "planned": estimate.total, "measured": weights_rss + forward_rss}
        rows.append(row)
        print(f"  memory {path.name} {size}px: compiled model RSS {weights_rss / 2**20:.0f} MiB "
              f"({row['weight_ratio']:.2f}x initialisers), forward peak {forward_rss / 2**20:.0f} MiB "
              f"({row['activation_ratio']:.2f}x tensor peak); planned {estimate.total / 2**20:.0f} MiB, "
              f"measured {row['measured'] / 2**20:.0f} MiB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default="small,vgg16")
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-calib", type=int, default=4, help="calibration images for int8 (0: no int8)")
    parser.add_argument("--memory-sizes", default="", help="OpenVINO peak RSS at these sizes (fresh process each)")
    args = parser.parse_args()
    kind = cpu_kind()
    print(f"CPU: {cpu_description()}; kind {kind.describe()}; flags {' '.join(sorted(kind.flags))}; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenVINO {openvino_version()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fcnseg-runtimes-") as tmp:
        for name in args.nets.split(","):
            rows += bench_net(name, args, Path(tmp))
    print(f"\n{args.size}x{args.size}, one image, median of {args.rounds} interleaved rounds; agreement: labels equal "
          "to PyTorch fp32 contiguous\n")
    print("| net | path | median s | vs PyTorch fp32 | agreement |\n|---|---|---|---|---|")
    for r in rows:
        speed = "" if r["speedup"] != r["speedup"] else f"{r['speedup']:.2f}x"
        print(f"| {r['net']} | {r['path']} | {r['median_s']:.3f} | {speed} | {r['agreement']:.2%} |")
    for r in rows:
        if "why" in r:
            print(f"\n{r['net']} ({r['model']}): --runtime auto took {r['choice_s']:.0f} s"
                  f"{' (export included)' if r['model'] == 'checkpoint' else ''}: {r['why']}")


if __name__ == "__main__":
    main()
