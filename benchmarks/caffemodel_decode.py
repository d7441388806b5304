"""Decoding speed of fcnseg's caffemodel reader on a synthetic VGG16 FCN-32s file (or a real one); prints MB/s.

    python benchmarks/caffemodel_decode.py                    # ~100 MB synthetic, packed and unpacked floats
    python benchmarks/caffemodel_decode.py --size-mb 550      # about the size of VGG_ILSVRC_16_layers.caffemodel
    python benchmarks/caffemodel_decode.py --file fcn32s-heavy-pascal.caffemodel
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np

from fcnseg.weights.caffe import caffe_to_state_dict
from fcnseg.weights.caffe_protobuf import read_caffemodel

VGG16_CONVS = [("conv1_1", 64, 3), ("conv1_2", 64, 64), ("conv2_1", 128, 64), ("conv2_2", 128, 128),
               ("conv3_1", 256, 128), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv4_1", 512, 256),
               ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv5_1", 512, 512), ("conv5_2", 512, 512),
               ("conv5_3", 512, 512)]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob(shape: tuple[int, ...], rng: np.random.Generator, packed: bool) -> bytes:
    values = rng.standard_normal(math.prod(shape), dtype=np.float32)
    dims = _field(1, b"".join(_varint(d) for d in shape))  # BlobShape.dim, packed
    if packed:
        data = _field(5, values.tobytes())  # BlobProto.data, packed
    else:
        records = np.empty((values.size, 5), np.uint8)
        records[:, 0] = 5 << 3 | 5  # BlobProto.data as fixed32, one tag per value
        records[:, 1:] = values.view(np.uint8).reshape(-1, 4)
        data = records.tobytes()
    return _field(7, dims) + data


def _layer(name: str, type_: str, shapes: list[tuple[int, ...]], rng, packed: bool) -> bytes:
    body = _field(1, name.encode()) + _field(2, type_.encode())
    body += b"".join(_field(7, _blob(shape, rng, packed)) for shape in shapes)
    return _field(100, body)  # NetParameter.layer


def write_synthetic_fcn32s(path: str, size_mb: float, packed: bool = True) -> None:
    """A VGG16 FCN-32s with real trunk convolutions and fc6/fc7 widths chosen to reach ``size_mb``."""
    classes = 21
    fixed = sum(o * i * 9 + o for _, o, i in VGG16_CONVS) + classes * classes * 64 * 64
    budget = size_mb * 1e6 / 4 - fixed
    # fc6 [F, 512, 7, 7] + fc7 [F, F] + score_fr [21, F]: solve F^2 + (25088 + 23) F = budget.
    width = max(8, int((-(25088 + 23) + math.sqrt((25088 + 23) ** 2 + 4 * max(budget, 0))) / 2))
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(_field(1, b"voc-fcn32s-synthetic"))
        for name, out, in_ in VGG16_CONVS:
            f.write(_layer(name, "Convolution", [(out, in_, 3, 3), (out,)], rng, packed))
        f.write(_layer("fc6", "Convolution", [(width, 512, 7, 7), (width,)], rng, packed))
        f.write(_layer("fc7", "Convolution", [(width, width, 1, 1), (width,)], rng, packed))
        f.write(_layer("score_fr", "Convolution", [(classes, width, 1, 1), (classes,)], rng, packed))
        f.write(_layer("upscore", "Deconvolution", [(classes, classes, 64, 64)], rng, packed))


def _time(path: str, label: str) -> None:
    size_mb = os.path.getsize(path) / 1e6
    start = time.perf_counter()
    net = read_caffemodel(path)
    decoded = time.perf_counter() - start
    start = time.perf_counter()
    try:
        mapped = caffe_to_state_dict(net, path)
        arch = f"{mapped.arch}/{mapped.backbone}"
    except Exception as e:  # a foreign net still shows its decoding speed
        arch = f"not mapped ({type(e).__name__})"
    converted = time.perf_counter() - start
    print(f"| {label:<28} | {size_mb:8.1f} | {decoded:8.2f} | {size_mb / decoded:8.0f} | {converted:8.2f} | {arch} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=100.0, help="synthetic file size (MB)")
    parser.add_argument("--file", help="time this caffemodel instead of synthetic ones")
    args = parser.parse_args()
    print("| file                         |       MB | decode s |     MB/s |    map s | detected |")
    print("|------------------------------|----------|----------|----------|----------|----------|")
    if args.file:
        _time(args.file, os.path.basename(args.file))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for packed in (True, False):
            path = os.path.join(tmp, "synthetic.caffemodel")
            write_synthetic_fcn32s(path, args.size_mb, packed=packed)
            _time(path, f"synthetic, {'packed' if packed else 'unpacked'} floats")
            os.remove(path)


if __name__ == "__main__":
    main()
