"""CPU inference side by side: a plain PyTorch FCN-8s, fcnseg's Predictor, ONNX Runtime fp32 and int8, on the same weights.

For the VGG16 FCN-8s and the small FCN-8s at 500x500, in one run: latency of each path from an RGB
uint8 image to its label map (repeats interleaved so that machine load hits them alike; median and
min), then on trained weights the argmax agreement of each path with the plain fp32 forward and the
mean IU of each on synthetic validation scenes, and a study of which layers to keep in float under
int8 (``--keep-variants``). Prints markdown tables naming the CPU.

    python benchmarks/cpu_inference.py [--repeats 3] [--models vgg16,small]
                                       [--small-checkpoint runs/demo/checkpoints/best.pt]
                                       [--vgg-checkpoint runs/bench/vgg16-fcn8s-heads.pt]

* plain: the net written as pytorch-fcn writes it (``torchfcn/models/fcn8s.py``: one module, NCHW,
  fp32 eager, hand-typed crops 5/9/31) for VGG16, loaded with the same weights and checked equal to
  fcnseg's; for the small net (which has no pytorch-fcn twin) fcnseg's module run as training code
  runs it (eager, NCHW, fp32, BatchNorm unfolded).
* predictor: ``fcnseg.inference.predictor.Predictor`` with precision and layout "auto".
* ort fp32 / ort int8: the export of ``fcnseg.inference.export`` and its ``fcnseg quantize``
  (``fcnseg.inference.quantization``), run through ``fcnseg.weights.onnx_format.OnnxNet``.

Weights: the demo's small FCN-8s (``fcnseg demo`` writes runs/demo/checkpoints/best.pt; without it the
small net is trained here for ``--small-steps`` updates) and a VGG16 FCN-8s whose score layers are
fitted briefly on the synthetic set with a random trunk (``benchmarks/inference.py``'s
``train_vgg_heads``: no ImageNet weights offline). Each net is calibrated and scored on scenes like
those it was trained on: the VGG16 heads on synthetic scenes of the evaluation size, written as PNGs to a
temporary folder (the same path a user's folder takes); the small net on the data set it was trained on
(``--small-data``, default the demo's data/synthetic-blobs: its first training images calibrate, its
validation split is scored, as a user quantizes on their own images), and also on the clean 500x500
scenes, larger than any it saw, where it is weaker and near-ties make int8 disagree more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fcnseg.weights.checkpoint import load_model  # noqa: E402
from fcnseg.data.synthetic import generate_sample, style_of_classes  # noqa: E402
from fcnseg.ideas.costs import time_interleaved  # noqa: E402
from fcnseg.inference.export import export_onnx  # noqa: E402
from fcnseg.weights.onnx_format import OnnxNet, available_cores  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.inference.runtime import OrtNet  # noqa: E402
from fcnseg.inference.quantization import DEFAULT_KEEP_FP32, parse_keep_fp32, quantize, to_input  # noqa: E402
from fcnseg.metrics import ConfusionMatrix  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SMALL = ROOT / "runs/demo/checkpoints/best.pt"
DEFAULT_VGG = ROOT / "runs/bench/vgg16-fcn8s-heads.pt"
DEFAULT_SMALL_DATA = ROOT / "data/synthetic-blobs"
PATHS = ("plain", "predictor", "ort_fp32", "ort_int8")


# --- the CPU --------------------------------------------------------------------------------------


def cpu_description() -> str:
    """``AMD EPYC, 2 cores: AVX-512 BF16 + VNNI, no AMX`` from /proc/cpuinfo (and the cores this process may use)."""
    name, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name == "unknown CPU":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return f"{name}, {available_cores()} cores: {cpu_kind(flags)}"


def cpu_kind(flags: set[str]) -> str:
    """The kind of CPU the figures stand for: AMX, AVX-512 BF16, AVX-512, AVX2, and whether it has VNNI."""
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    if "amx_bf16" in flags:
        kind = "AMX (native bf16)"
    elif "avx512_bf16" in flags:
        kind = "AVX-512 BF16 (native bf16), no AMX"
    elif "avx512f" in flags:
        kind = "AVX-512, no native bf16"
    elif "avx2" in flags:
        kind = "AVX2 only, no native bf16"
    else:
        kind = "no AVX2"
    return f"{kind}, {'with' if vnni else 'no'} VNNI"


# --- the plain net --------------------------------------------------------------------------------


class PlainFCN8s(nn.Module):
    """VGG16 FCN-8s as pytorch-fcn writes it: one module, NCHW, crops typed in (5, 9, 31 for pad 100)."""

    def __init__(self, num_classes: int):
        super().__init__()
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        channels = 3
        for stage, widths in enumerate(((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)), 1):
            for i, width in enumerate(widths, 1):
                layers[f"conv{stage}_{i}"] = nn.Conv2d(channels, width, 3, padding=100 if channels == 3 else 1)
                layers[f"relu{stage}_{i}"] = nn.ReLU(inplace=True)
                channels = width
            layers[f"pool{stage}"] = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.stages = list(layers)
        self.fc6, self.relu6 = nn.Conv2d(512, 4096, 7), nn.ReLU(inplace=True)
        self.fc7, self.relu7 = nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True)
        self.score_fr = nn.Conv2d(4096, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for name in self.stages:
            h = getattr(self, name)(h)
            if name == "pool3":
                pool3 = h  # 1/8
            elif name == "pool4":
                pool4 = h  # 1/16
        h = self.relu7(self.fc7(self.relu6(self.fc6(h))))  # dropout is the identity in eval
        upscore2 = self.upscore2(self.score_fr(h))  # 1/16
        h = self.score_pool4(pool4)[:, :, 5 : 5 + upscore2.size(2), 5 : 5 + upscore2.size(3)]
        upscore_pool4 = self.upscore_pool4(upscore2 + h)  # 1/8
        h = self.score_pool3(pool3)[:, :, 9 : 9 + upscore_pool4.size(2), 9 : 9 + upscore_pool4.size(3)]
        h = self.upscore8(upscore_pool4 + h)
        return h[:, :, 31 : 31 + x.size(2), 31 : 31 + x.size(3)].contiguous()


def plain_model(checkpoint: Path) -> tuple[nn.Module, object]:
    """The plain net with the checkpoint's weights (VGG16: :class:`PlainFCN8s`; small: fcnseg's module as is)."""
    loaded = load_model(checkpoint)
    if loaded.config.backbone != "vgg16":
        return loaded.model.eval(), loaded
    plain = PlainFCN8s(loaded.config.num_classes)
    state = {k.removeprefix("backbone."): v for k, v in loaded.model.state_dict().items()}
    plain.load_state_dict(state, strict=True)
    return plain.eval(), loaded


# --- weights --------------------------------------------------------------------------------------


def small_checkpoint(path: Path | None, steps: int) -> Path:
    """The demo's checkpoint, or a small FCN-8s trained here for ``steps`` updates with the demo's recipe."""
    if path is not None and path.is_file():
        return path
    if DEFAULT_SMALL.is_file():
        return DEFAULT_SMALL
    from fcnseg.demo import DEMO_STYLE, demo_config
    from fcnseg.training.trainer import train

    out = ROOT / "runs/bench/small-fcn8s"
    if not (out / "checkpoints/best.pt").is_file():
        print(f"training the small FCN-8s for {steps} updates -> {out}", flush=True)
        data = ROOT / f"data/synthetic-{DEMO_STYLE}"
        from fcnseg.demo import ensure_synthetic

        ensure_synthetic(data, DEMO_STYLE, 400, 50)
        train(demo_config(data, out, DEMO_STYLE, steps))
    return out / "checkpoints/best.pt"


def vgg_checkpoint(path: Path | None, steps: int) -> Path:
    if path is not None and path.is_file():
        return path
    if not DEFAULT_VGG.is_file():
        from inference import train_vgg_heads  # benchmarks/inference.py

        print(f"training a VGG16 FCN-8s's score layers for {steps} steps -> {DEFAULT_VGG}", flush=True)
        train_vgg_heads(DEFAULT_VGG, steps)
    return DEFAULT_VGG


# --- measuring ------------------------------------------------------------------------------------


def label_functions(plain, loaded, fp32_net: OnnxNet, int8_net: OnnxNet, predictor: Predictor) -> dict:
    """Each path as ``image (RGB uint8 [H, W, 3]) -> labels (int64 [H, W])``."""
    normalization = loaded.normalization

    def run_plain(image):
        with torch.inference_mode():
            return plain(normalization.image_to_tensor(image)[None])[0].max(0).indices

    def run_onnx(net):
        return lambda image: net(to_input(image))[0].max(0).indices

    return {
        "plain": run_plain,
        "predictor": lambda image: torch.from_numpy(predictor.predict(image).labels.astype(np.int64)),
        "ort_fp32": run_onnx(fp32_net),
        "ort_int8": run_onnx(int8_net),
    }


def accuracy(functions: dict, scenes, num_classes: int) -> dict:
    """Per path: argmax agreement with the plain forward and mean IU against the scenes' masks."""
    reference = [functions["plain"](s.image) for s in scenes]
    out = {}
    for name, fn in functions.items():
        matrix, same, total = ConfusionMatrix(num_classes), 0, 0
        for scene, ref in zip(scenes, reference):
            labels = ref if name == "plain" else fn(scene.image)
            matrix.update(labels, torch.from_numpy(scene.mask))
            same += int((labels == ref).sum())
            total += ref.numel()
        out[name] = {"agreement": same / total, "mean_iu": matrix.compute()["mean_iu"]}
    return out


def write_calibration(folder: Path, style: str, num: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num):
        Image.fromarray(generate_sample(0, "train", 1000 + i, style, size=(size, size)).image).save(folder / f"calib_{i:03d}.png")
    return folder


def data_set_scenes(root: Path, calib_folder: Path, num_calib: int) -> tuple[Path, list]:
    """The VOC-layout set ``root``: its first ``num_calib`` training images copied to ``calib_folder``, and its
    validation items (RawItem: image RGB uint8, mask int64) as stored (JPEG), at their own sizes."""
    from fcnseg.data.voc import VOCDataset

    train = VOCDataset(root, "train", scan=False)
    calib_folder.mkdir(parents=True, exist_ok=True)
    for index in range(min(num_calib, len(train))):
        source = Path(train.samples[index].image_path)
        (calib_folder / source.name).write_bytes(source.read_bytes())
    val = VOCDataset(root, "val", scan=False)
    return calib_folder, [val.load_raw(i) for i in range(len(val))]


def bench_model(label: str, checkpoint: Path, args, tmp: Path, data_dir: Path | None = None) -> dict:
    plain, loaded = plain_model(checkpoint)
    num_classes = loaded.config.num_classes
    style = style_of_classes(loaded.class_names) or "shapes"
    predictor_loaded = load_model(checkpoint)  # its own copy: the Predictor folds BatchNorm and may go channels_last
    predictor = Predictor(predictor_loaded.model, predictor_loaded.normalization, predictor_loaded.class_names, max_memory=None)
    with torch.inference_mode():  # the plain net and fcnseg's compute the same function
        x = loaded.normalization.image_to_tensor(generate_sample(0, "val", 0, style, size=(args.size, args.size)).image)[None]
        diff = float((plain(x) - load_model(checkpoint).model.eval()(x)).abs().max())
    print(f"{label}: {checkpoint}; plain vs fcnseg module max |diff| {diff:.2e}; Predictor: {predictor.describe()}", flush=True)

    start = time.perf_counter()
    fp32_path = export_onnx(loaded, tmp / f"{label}-fp32.onnx")
    export_s = time.perf_counter() - start
    if data_dir is not None:
        calib, scenes = data_set_scenes(data_dir, tmp / f"calib-{label}", args.calib_images)
        scored_on = f"the {len(scenes)} validation images of {data_dir} (calibrated on its first training images)"
    else:
        calib = write_calibration(tmp / f"calib-{style}", style, args.calib_images, args.size)
        scenes = [generate_sample(0, "val", i, style, size=(args.size, args.size)) for i in range(args.eval_images)]
        scored_on = f"{args.eval_images} synthetic validation scenes of {args.size}x{args.size}"
    variants = {}
    for keep_text in args.keep_variants.split(";"):
        keep = parse_keep_fp32(keep_text)
        start = time.perf_counter()
        report = quantize(fp32_path, tmp / f"{label}-int8-{'+'.join(keep) or 'none'}.onnx", calib,
                          num_calib=args.calib_images, keep_fp32=keep, check_images=0,
                          calibration_cache=tmp / f"{label}-ranges.json")  # one calibration pass for all variants
        variants[keep] = (report.path, time.perf_counter() - start)
    default = tuple(DEFAULT_KEEP_FP32)
    if default not in variants:
        report = quantize(fp32_path, tmp / f"{label}-int8.onnx", calib, num_calib=args.calib_images, check_images=0,
                          calibration_cache=tmp / f"{label}-ranges.json")
        variants[default] = (report.path, 0.0)
    fp32_net = OnnxNet(fp32_path)
    functions = label_functions(plain, loaded, fp32_net, OnnxNet(variants[default][0]), predictor)

    image = generate_sample(0, "val", 0, style, size=(args.size, args.size)).image
    times = time_interleaved({name: (lambda fn=fn: fn(image)) for name, fn in functions.items()}, args.repeats)
    acc = accuracy(functions, scenes, num_classes)
    if data_dir is not None:  # the same paths on the clean 500x500 scenes too
        large = [generate_sample(0, "val", i, style, size=(args.size, args.size)) for i in range(args.eval_images)]
        acc_large = accuracy(functions, large, num_classes)
    else:
        acc_large = None

    study = []
    for keep, (path, seconds) in variants.items():
        net = OnnxNet(path)
        fns = {"plain": functions["plain"], "int8": lambda im, net=net: net(to_input(im))[0].max(0).indices}
        result = accuracy(fns, scenes, num_classes)["int8"]
        latency = min(time_interleaved({"int8": lambda net=net: net(to_input(image))}, max(2, args.repeats // 2))["int8"])
        study.append({"keep": ",".join(keep) or "none", "agreement": result["agreement"], "mean_iu": result["mean_iu"],
                      "min_s": latency, "quantize_s": seconds})
    memory = []
    if args.memory_sizes:
        sizes = [int(v) for v in args.memory_sizes.split(",")]
        memory = measure_onnx_memory(fp32_path, sizes) + measure_onnx_memory(variants[default][0], sizes)
    return {
        "model": label, "checkpoint": str(checkpoint), "classes": num_classes, "style": style, "memory": memory,
        "predictor": predictor.describe(), "export_s": export_s,
        "median": {k: statistics.median(v) for k, v in times.items()}, "min": {k: min(v) for k, v in times.items()},
        "accuracy": acc, "study": study, "plain_diff": diff, "scored_on": scored_on, "accuracy_large": acc_large,
    }


# --- memory ---------------------------------------------------------------------------------------

MEMORY_PROBE = """
import sys, numpy as np
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key + ':'))
from fcnseg.inference.runtime import OrtNet
import onnx, onnxruntime  # the libraries' own memory is the interpreter's, not the model's
before = status('VmRSS')
net = OrtNet.from_file(sys.argv[1])
loaded = status('VmRSS')
size = int(sys.argv[2])
pixels = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
open('/proc/self/clear_refs', 'w').write('5')  # reset the high-water mark
base = status('VmRSS')
net(pixels)
print(loaded - before, status('VmHWM') - base)
"""


def measure_onnx_memory(path: Path, sizes: list[int]) -> list[dict]:
    """Per size: the session's RSS for its weights and the peak RSS rise of one forward (fresh process each),
    next to :func:`fcnseg.inference.memory.estimate_onnx`'s terms before its factors."""
    from fcnseg.inference.memory import ORT_ACTIVATION_FACTOR, ORT_WEIGHT_FACTOR

    net = OrtNet.from_file(path)
    rows = []
    for size in sizes:
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(size)], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        weights_rss, forward_rss = (int(v) for v in out.stdout.split()[-2:])
        estimate = net.estimate(size, size)
        rows.append({
            "size": size, "precision": net.precision, "weights_rss": weights_rss, "forward_rss": forward_rss,
            "initializer_bytes": net.weight_bytes, "tensor_peak": estimate.activations,
            "weight_ratio": weights_rss / net.weight_bytes, "activation_ratio": forward_rss / estimate.activations,
            "planned": estimate.total, "measured": weights_rss + forward_rss,
            "factors": (ORT_WEIGHT_FACTOR[net.precision], ORT_ACTIVATION_FACTOR[net.precision]),
        })
        print(f"  memory {path.name} {size}px: weights RSS {weights_rss / 2**20:.0f} MiB "
              f"({rows[-1]['weight_ratio']:.2f}x initialisers), forward peak {forward_rss / 2**20:.0f} MiB "
              f"({rows[-1]['activation_ratio']:.2f}x tensor peak)", flush=True)
    return rows


# --- reporting ------------------------------------------------------------------------------------

NAMES = {"plain": "plain fp32 eager", "predictor": "fcnseg Predictor (auto)", "ort_fp32": "ORT fp32", "ort_int8": "ORT int8"}


def print_tables(rows: list[dict], cpu: str, args) -> None:
    print(f"\nCPU: {cpu}; torch {torch.__version__} ({torch.get_num_threads()} threads), ONNX Runtime "
          f"{__import__('onnxruntime').__version__} ({available_cores()} threads); {args.size}x{args.size}, "
          f"{args.repeats} interleaved repeats; int8 default keeps {','.join(DEFAULT_KEEP_FP32) or 'nothing'} in float\n")
    print("| model | path | median / min (s) | img/s | speed-up vs plain (median) | argmax agreement with plain | mean IU |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        base = r["median"]["plain"]
        for path in PATHS:
            a = r["accuracy"][path]
            print(f"| {r['model']} | {NAMES[path]} | {r['median'][path]:.3f} / {r['min'][path]:.3f} | {1 / r['median'][path]:.2f} "
                  f"| {base / r['median'][path]:.2f}x | {a['agreement']:.2%} | {100 * a['mean_iu']:.2f} |")
    print("\nagreement and mean IU: " + "; ".join(f"{r['model']} on {r['scored_on']}" for r in rows)
          + ". Predictor = " + "; ".join(f"{r['model']}: {r['predictor']}" for r in rows))
    for r in rows:
        if r.get("accuracy_large"):
            shown = ", ".join(f"{NAMES[path]} {a['agreement']:.2%} agreement / {100 * a['mean_iu']:.2f} mean IU"
                              for path, a in r["accuracy_large"].items())
            print(f"{r['model']} on {args.eval_images} clean synthetic scenes of {args.size}x{args.size}: {shown}")
    print("\nWhich layers to keep in float under int8 (same calibration, same scenes):\n")
    print("| model | kept in float | agreement with plain | mean IU (fp32 -> int8) | int8 min (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        fp32 = r["accuracy"]["plain"]["mean_iu"]
        for s in r["study"]:
            print(f"| {r['model']} | {s['keep']} | {s['agreement']:.2%} | {100 * fp32:.2f} -> {100 * s['mean_iu']:.2f} "
                  f"({100 * (s['mean_iu'] - fp32):+.2f}) | {s['min_s']:.3f} |")
    if any(r["memory"] for r in rows):
        print("\nONNX Runtime memory (fresh process per row): measured RSS against the memory model's terms\n")
        print("| model | precision | size | weights RSS (x initialisers) | forward peak RSS (x tensor peak) "
              "| planned total / measured |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            for m in r["memory"]:
                print(f"| {r['model']} | {m['precision']} | {m['size']} | {m['weights_rss'] / 2**20:.0f} MiB "
                      f"({m['weight_ratio']:.2f}x) | {m['forward_rss'] / 2**20:.0f} MiB ({m['activation_ratio']:.2f}x) "
                      f"| {m['planned'] / 2**20:.0f} / {m['measured'] / 2**20:.0f} MiB |")
    print()
    native = any(k in cpu for k in ("AMX", "native bf16)"))
    target = 4.0 if native else 3.0
    for r in rows:
        fastest = min(PATHS[1:], key=lambda p: r["median"][p])
        speed = r["median"]["plain"] / r["median"][fastest]
        int8 = r["accuracy"]["ort_int8"]
        diu = 100 * (int8["mean_iu"] - r["accuracy"]["plain"]["mean_iu"])
        print(f"target {r['model']}: fastest path ({NAMES[fastest]}) {speed:.2f}x plain eager, target >= {target:.0f}x "
              f"({'native bf16/AMX' if native else 'no native bf16'}) -> {'met' if speed >= target else 'NOT met'}; "
              f"int8 agreement {int8['agreement']:.2%} (target >= 99.5%: {'met' if int8['agreement'] >= 0.995 else 'NOT met'}), "
              f"mean IU {diu:+.2f} points (target within 0.5: {'met' if abs(diu) <= 0.5 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="vgg16,small")
    parser.add_argument("--small-checkpoint", type=Path)
    parser.add_argument("--vgg-checkpoint", type=Path)
    parser.add_argument("--small-data", type=Path,
                        help="the VOC-layout set the small net was trained on (default: data/synthetic-blobs, the demo's)")
    parser.add_argument("--small-steps", type=int, default=400, help="updates for the small net when no checkpoint is found")
    parser.add_argument("--vgg-train-steps", type=int, default=60)
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--eval-images", type=int, default=8)
    parser.add_argument("--keep-variants", default="none;first,score;head;first,head",
                        help="';'-separated --keep-fp32 values to compare (the default is always measured)")
    parser.add_argument("--memory-sizes", default="256,500,1000",
                        help="sizes for the ONNX Runtime memory measurement ('' to skip)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    wanted = args.models.split(",")
    cpu = cpu_description()
    print(f"CPU: {cpu}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fcnseg-cpu-bench-") as tmp:
        if "vgg16" in wanted:
            rows.append(bench_model("FCN-8s VGG16", vgg_checkpoint(args.vgg_checkpoint, args.vgg_train_steps), args, Path(tmp)))
        if "small" in wanted:
            data_dir = args.small_data if args.small_data is not None else DEFAULT_SMALL_DATA
            rows.append(bench_model("FCN-8s small", small_checkpoint(args.small_checkpoint, args.small_steps), args, Path(tmp),
                                    data_dir if (data_dir / "ImageSets").is_dir() else None))
    print_tables(rows, cpu, args)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
