"""The CPU path measured on this CPU: fp32 contiguous vs channels_last (and bf16 where the CPU has it natively)
for inference and for the training step, the peer beside ``fcnseg predict``'s default, and what the resolver picks.

    python benchmarks/cpu_paths.py --threads 2 [--repeats 8] [--vgg-repeats 2] [--train-rounds 4]
                                   [--vgg-train-rounds 2] [--nets small,vgg16] [--train-nets small,vgg16]

* inference: the small net (``backbone small, batch_norm true, padding same``: the small-cpu preset's) and
  the VGG16 FCN-8s (pad 100, the paper's) on one 500x500 RGB image, through
  :class:`fcnseg.inference.runtime.TorchNet` (BatchNorm folded, inference mode) in each precision and
  layout; the paths are interleaved within each round so that machine load hits them alike (median).
* training: the small net's update (:func:`fcnseg.training.loop.train_step`, 128x128 crops, batch 8;
  ``benchmarks/training.py``'s ``make_step``) and VGG16 FCN-8s's (224x224, batch 1), images per second,
  the modes interleaved per round.
* the peer: pytorch-fcn's plain fp32 eager FCN-8s (``benchmarks/cpu_inference.py``'s ``PlainFCN8s`` for
  VGG16, NCHW, the same weights; fcnseg's own module unfolded and NCHW for the small net, which has no
  pytorch-fcn twin) against :class:`fcnseg.inference.predictor.Predictor` with its defaults, image to labels.

Weights are random (timing does not depend on their values). Prints markdown tables naming the CPU model,
its flags and its kind (:func:`fcnseg.precision.cpu_kind`).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_inference import PlainFCN8s  # noqa: E402  (benchmarks/cpu_inference.py: pytorch-fcn's net)
from training import make_step  # noqa: E402  (benchmarks/training.py: one training update)

from fcnseg.config import ModelConfig  # noqa: E402
from fcnseg.data.normalization import IMAGENET_RGB  # noqa: E402
from fcnseg.ideas.costs import time_interleaved  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.inference.runtime import TorchNet  # noqa: E402
from fcnseg.models.fcn import build_model  # noqa: E402
from fcnseg.precision import cpu_kind, resolve_execution  # noqa: E402
from fcnseg.weights.handle import LoadedModel  # noqa: E402

SIZE = 500
NETS = {
    "small": ModelConfig(arch="fcn8s", backbone="small", num_classes=21, padding="same", batch_norm=True),
    "vgg16": ModelConfig(arch="fcn8s", backbone="vgg16", num_classes=21),
}
LABELS = {"small": "small FCN-8s", "vgg16": "VGG16 FCN-8s"}


def variants() -> list[tuple[str, str]]:
    """(precision, layout) pairs to time: fp32 both layouts, bf16 both only where the CPU runs it natively."""
    precisions = ["fp32"] + (["bf16"] if cpu_kind().native_bf16 else [])
    return [(p, layout) for p in precisions for layout in ("contiguous", "channels_last")]


def peer_model(name: str, model) -> torch.nn.Module:
    """pytorch-fcn's way of running the net: plain fp32 eager NCHW with ``model``'s weights."""
    if name != "vgg16":
        return copy.deepcopy(model).eval()  # the small net has no pytorch-fcn twin: fcnseg's module, unfolded
    plain = PlainFCN8s(model.config.num_classes)
    plain.load_state_dict({k.removeprefix("backbone."): v for k, v in model.state_dict().items()}, strict=True)
    return plain.eval()


def time_inference(name: str, repeats: int) -> dict:
    """Median seconds of each inference path of net ``name`` on one 500x500 image."""
    torch.manual_seed(0)
    model = build_model(NETS[name]).eval()
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    pixels = torch.from_numpy(image)[None]
    fns = {}
    for precision, layout in variants():
        handle = LoadedModel(copy.deepcopy(model), model.config, [], IMAGENET_RGB, "memory")
        net = TorchNet(handle.prepare("cpu", precision, layout))
        fns[f"{precision} {layout}"] = lambda net=net: net(pixels)
    plain = peer_model(name, model)

    def run_peer():
        with torch.inference_mode():
            return plain(IMAGENET_RGB.image_to_tensor(image)[None])[0].max(0).indices

    predictor = Predictor(copy.deepcopy(model), IMAGENET_RGB)
    fns["peer"] = run_peer
    fns["predict default"] = lambda: predictor.predict(image)
    times = time_interleaved(fns, repeats=repeats, warmup=1)
    result = {key: statistics.median(ts) for key, ts in times.items()}
    result["default plan"] = f"{predictor.precision}, {'channels_last' if predictor.channels_last else 'contiguous'}"
    return result


TRAINING = {  # net -> (batch, crop side, padding): the small-cpu preset's step, and the paper's VGG16 net
    "small": (8, 128, "same"),
    "vgg16": (1, 224, "paper"),
}


def time_training(name: str, rounds: int, steps: int) -> dict:
    """Images per second of net ``name``'s training update in each (precision, layout), interleaved per round."""
    batch, size, padding = TRAINING[name]
    modes = {f"{p} {layout}": ("bf16" if p == "bf16" else "") + ("+channels_last" if layout == "channels_last" else "")
             for p, layout in variants()}
    # make_step's mode words: "fp32", "channels_last", "bf16", "bf16+channels_last"
    mode_words = {key: (word.lstrip("+") or "fp32") for key, word in modes.items()}
    stepper = {key: make_step(name, batch, size, word, padding=padding)[0] for key, word in mode_words.items()}
    for step in stepper.values():  # warm-up: oneDNN primitives, allocator
        step()
    seconds: dict[str, list[float]] = {key: [] for key in stepper}
    for _ in range(rounds):
        for key, step in stepper.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            seconds[key].append((time.perf_counter() - start) / steps)
    return {key: batch / statistics.median(ts) for key, ts in seconds.items()}


def print_tables(kind, rows: dict, trainings: dict, threads: int) -> None:
    flags = ", ".join(sorted(kind.flags)) or "none of the relevant ones"
    print(f"\nCPU: {kind.model}, {threads} threads; flags: {flags}; kind `{kind.name}`"
          f"{f' (capped by {kind.cap})' if kind.cap else ''}; torch {torch.__version__}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}\n")
    keys = [f"{p} {layout}" for p, layout in variants()]
    print("| net | purpose | " + " | ".join(keys) + " | channels_last vs contiguous (fp32) | resolver picks |")
    print("|---|---|" + "---|" * len(keys) + "---|---|")
    inference = resolve_execution("cpu", purpose="inference")
    for name, row in rows.items():
        cells = " | ".join(f"{row[k] * 1000:.0f} ms" for k in keys)
        ratio = row["fp32 contiguous"] / row["fp32 channels_last"]
        print(f"| {LABELS[name]} | inference {SIZE}x{SIZE} | {cells} | {ratio:.2f}x | "
              f"{inference.precision}, {inference.layout} |")
    plan = resolve_execution("cpu", purpose="training")
    for name, training in trainings.items():
        batch, size, _ = TRAINING[name]
        cells = " | ".join(f"{training[k]:.3g} img/s" for k in keys)
        ratio = training["fp32 channels_last"] / training["fp32 contiguous"]
        print(f"| {LABELS[name]} | training {batch}x{size}x{size} | {cells} | {ratio:.2f}x | "
              f"{plan.precision}, {plan.layout} |")
    print("\n(ratio > 1: channels_last is faster.)\n")
    print("| net, 500x500, image to labels | peer: plain fp32 eager NCHW | `fcnseg predict` default | default vs peer |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {LABELS[name]} | {row['peer'] * 1000:.0f} ms | {row['predict default'] * 1000:.0f} ms "
              f"({row['default plan']}) | {row['peer'] / row['predict default']:.2f}x |")
    print("\n(default vs peer > 1: the default is faster.)")
    print(f"\nresolver, inference: {inference.describe()}")
    print(f"resolver, training: {resolve_execution('cpu', purpose='training').describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=8, help="timed rounds for the small net's inference")
    parser.add_argument("--vgg-repeats", type=int, default=2, help="timed rounds for VGG16 (~3 s a forward on AVX2)")
    parser.add_argument("--train-rounds", type=int, default=4, help="timed rounds of the training modes")
    parser.add_argument("--train-steps", type=int, default=3, help="updates per mode per round")
    parser.add_argument("--vgg-train-rounds", type=int, default=2, help="timed rounds of VGG16's training step")
    parser.add_argument("--nets", default="small,vgg16", help="comma list of the inference nets (small, vgg16)")
    parser.add_argument("--train-nets", default="small,vgg16", help="comma list of the training nets (small, vgg16)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = cpu_kind()
    print(f"timing on {kind.describe()} ...", flush=True)
    rows = {}
    for name in args.nets.split(","):
        rows[name] = time_inference(name, args.vgg_repeats if name == "vgg16" else args.repeats)
        print(f"  {name} inference: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in rows[name].items()
                                                   if isinstance(v, float)), flush=True)
    trainings = {}
    for name in filter(None, args.train_nets.split(",")):
        rounds, steps = (args.vgg_train_rounds, 1) if name == "vgg16" else (args.train_rounds, args.train_steps)
        trainings[name] = time_training(name, rounds, steps)
        print(f"  {name} training: " + ", ".join(f"{k} {v:.3g} img/s" for k, v in trainings[name].items()), flush=True)
    print_tables(kind, rows, trainings, torch.get_num_threads())


if __name__ == "__main__":
    main()
