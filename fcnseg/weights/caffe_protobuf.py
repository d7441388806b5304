"""Decode Caffe's binary ``.caffemodel`` (a protobuf ``NetParameter``) without Caffe or protobuf.

A small decoder of the protobuf wire format walks the few fields of ``src/caffe/proto/caffe.proto``
(BVLC/caffe) that hold layer names, types and learned blobs; it knows nothing of FCNs.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass, field

import numpy as np

from fcnseg.errors import CheckpointError

# ---------------------------------------------------------------------------------------------------------
# Schema: the few field numbers of caffe.proto (BVLC/caffe) we read; every other field is skipped.
# ---------------------------------------------------------------------------------------------------------
NET_NAME, NET_LAYERS_V1, NET_LAYER = 1, 2, 100  # NetParameter: name, layers (V1LayerParameter), layer
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7  # LayerParameter
V1_NAME, V1_TYPE, V1_BLOBS, V1_V0_LAYER = 4, 5, 6, 1  # V1LayerParameter (type is the LayerType enum)
V0_NAME, V0_TYPE, V0_BLOBS = 1, 2, 50  # V0LayerParameter, nested in the V1 record's field 1
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4  # BlobProto: deprecated 4-D shape
BLOB_DATA, BLOB_DIFF, BLOB_SHAPE, BLOB_DOUBLE_DATA, BLOB_DOUBLE_DIFF = 5, 6, 7, 8, 9
SHAPE_DIM = 1  # BlobShape: repeated int64 dim [packed = true]

WIRE_VARINT, WIRE_FIXED64, WIRE_BYTES, WIRE_GROUP_START, WIRE_GROUP_END, WIRE_FIXED32 = 0, 1, 2, 3, 4, 5

# V1LayerParameter.LayerType -> the type string Caffe's UpgradeV1LayerType gives it.
V1_LAYER_TYPES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col", 12: "ImageData",
    13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 16: "MultinomialLogisticLoss", 17: "Pooling",
    18: "ReLU", 19: "Sigmoid", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 23: "TanH",
    24: "WindowData", 25: "Eltwise", 26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss",
    29: "MemoryData", 30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN",
    35: "AbsVal", 36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}

# V0LayerParameter type strings (Caffe's UpgradeV0LayerType) -> current type strings.
V0_LAYER_TYPES = {
    "accuracy": "Accuracy", "bnll": "BNLL", "concat": "Concat", "conv": "Convolution", "data": "Data",
    "dropout": "Dropout", "euclidean_loss": "EuclideanLoss", "flatten": "Flatten", "hdf5_data": "HDF5Data",
    "hdf5_output": "HDF5Output", "im2col": "Im2col", "images": "ImageData", "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct", "lrn": "LRN", "multinomial_logistic_loss": "MultinomialLogisticLoss",
    "pool": "Pooling", "relu": "ReLU", "sigmoid": "Sigmoid", "softmax": "Softmax",
    "softmax_loss": "SoftmaxWithLoss", "split": "Split", "tanh": "TanH", "window_data": "WindowData",
}


@dataclass
class CaffeLayer:
    """One layer record of a caffemodel.

    Attributes:
        name: the layer name (``conv1_1``, ``score_fr``, ...).
        type: the type string (``Convolution``, ``Deconvolution``, ``InnerProduct``, ...); V1 enum numbers
            and V0 strings are translated to the current names.
        blobs: the learned parameters as float32 arrays of the stored shape (a legacy blob keeps its
            4-D ``num x channels x height x width`` shape, e.g. an InnerProduct bias is ``[1, 1, 1, 4096]``).
    """

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


@dataclass
class CaffeNet:
    """A decoded caffemodel: the net name and its layers in file order."""

    name: str
    layers: list[CaffeLayer]

    def layer(self, name: str) -> CaffeLayer | None:
        """The first layer called ``name``, or None."""
        return next((layer for layer in self.layers if layer.name == name), None)


# ---------------------------------------------------------------------------------------------------------
# Wire-format decoding. Offsets are into one read-only buffer (an mmap of the file); floats are read with
# np.frombuffer over whole packed runs, so a 500 MB file costs a few copies, not a Python loop per value.
# ---------------------------------------------------------------------------------------------------------
class _DecodeError(Exception):
    """A malformed or truncated message; read_caffemodel adds the file name."""


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; returns (value, next position)."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _DecodeError(f"truncated: a varint at byte {start} runs past the end of its message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _DecodeError(f"a varint at byte {start} is longer than 10 bytes")


def _int64(value: int) -> int:
    """Reinterpret a decoded varint as a two's-complement int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _next_field(buf, pos: int, end: int) -> tuple[int, int, int, int, int]:
    """Read one field at ``pos``.

    Returns ``(number, wire_type, value, start, next_pos)``: for varints ``value`` is the number; for
    length-delimited and fixed-width fields the payload is ``buf[start:next_pos]``.
    """
    tag_pos = pos
    key, pos = _varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise _DecodeError(f"field number 0 at byte {tag_pos}")
    if wire == WIRE_VARINT:
        value, nxt = _varint(buf, pos, end)
        return number, wire, value, pos, nxt
    if wire == WIRE_BYTES:
        length, start = _varint(buf, pos, end)
        if start + length > end:
            raise _DecodeError(
                f"truncated: field {number} at byte {tag_pos} claims {length} bytes "
                f"but only {end - start} remain in its message"
            )
        return number, wire, length, start, start + length
    if wire in (WIRE_FIXED64, WIRE_FIXED32):
        width = 8 if wire == WIRE_FIXED64 else 4
        if pos + width > end:
            raise _DecodeError(f"truncated: a {width * 8}-bit field at byte {tag_pos} runs past the end")
        return number, wire, 0, pos, pos + width
    if wire in (WIRE_GROUP_START, WIRE_GROUP_END):
        raise _DecodeError(f"field {number} at byte {tag_pos} uses the deprecated group encoding, "
                           "which caffe.proto never uses")
    raise _DecodeError(f"invalid wire type {wire} at byte {tag_pos}")


def _expect(number: int, wire: int, wanted: int, what: str, pos: int) -> None:
    if wire != wanted:
        raise _DecodeError(f"{what} (field {number}) at byte {pos} has wire type {wire}, expected {wanted}")


def _string(buf, start: int, stop: int) -> str:
    return bytes(buf[start:stop]).decode("utf-8", errors="replace")


def _unpacked_run(buf, tag_pos: int, value_pos: int, end: int, width: int) -> tuple[np.ndarray, int]:
    """Decode a run of unpacked fixed-width values that repeat the tag found at ``tag_pos``.

    Each record is ``tag bytes + width value bytes``; records are checked in growing chunks with NumPy
    so that a long run costs no per-value Python work. Returns (raw value bytes as uint8 [n, width], end).
    """
    tag = np.frombuffer(buf, np.uint8, value_pos - tag_pos, tag_pos)
    record = len(tag) + width
    rows = (end - tag_pos) // record
    table = np.frombuffer(buf, np.uint8, rows * record, tag_pos).reshape(rows, record)
    n, chunk = 0, 1024
    while n < rows:
        m = min(chunk, rows - n)
        match = (table[n:n + m, : len(tag)] == tag).all(axis=1)
        if not match.all():
            n += int(np.argmin(match))
            break
        n += m
        chunk *= 2
    return table[:n, len(tag):].copy(), tag_pos + n * record  # copy: owned and aligned


def _decode_shape(buf, start: int, end: int) -> list[int]:
    dims: list[int] = []
    pos = start
    while pos < end:
        number, wire, value, vstart, pos = _next_field(buf, pos, end)
        if number != SHAPE_DIM:
            continue
        if wire == WIRE_VARINT:
            dims.append(_int64(value))
        elif wire == WIRE_BYTES:  # packed
            p = vstart
            while p < pos:
                d, p = _varint(buf, p, pos)
                dims.append(_int64(d))
        else:
            raise _DecodeError(f"BlobShape.dim at byte {vstart} has wire type {wire}")
    return dims


def _decode_blob(buf, start: int, end: int, where: str) -> np.ndarray:
    """Decode one BlobProto into a float32 array of its stored shape (``shape`` or legacy num/c/h/w)."""
    shape: list[int] | None = None
    legacy: dict[int, int] = {}
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    pos = start
    while pos < end:
        tag_pos = pos
        number, wire, value, vstart, pos = _next_field(buf, pos, end)
        if number == BLOB_SHAPE:
            _expect(number, wire, WIRE_BYTES, "BlobProto.shape", tag_pos)
            shape = _decode_shape(buf, vstart, pos)
        elif number in (BLOB_DATA, BLOB_DOUBLE_DATA):
            width, dtype, out = (4, "<f4", floats) if number == BLOB_DATA else (8, "<f8", doubles)
            if wire == WIRE_BYTES:  # packed, as caffe.proto declares
                if (pos - vstart) % width:
                    raise _DecodeError(f"{where}: packed data of {pos - vstart} bytes at byte {vstart} "
                                       f"is not a whole number of {width}-byte values")
                out.append(np.frombuffer(buf, dtype, (pos - vstart) // width, vstart))
            elif wire == (WIRE_FIXED32 if width == 4 else WIRE_FIXED64):  # unpacked: one tag per value
                raw, pos = _unpacked_run(buf, tag_pos, vstart, end, width)
                out.append(raw.view(dtype).reshape(-1))
            else:
                raise _DecodeError(f"{where}: data field {number} at byte {tag_pos} has wire type {wire}")
        elif number in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH):
            _expect(number, wire, WIRE_VARINT, "BlobProto legacy dimension", tag_pos)
            legacy[number] = _int64(value)
        # diff, double_diff (gradients) and unknown fields are skipped.

    if floats and doubles:
        raise _DecodeError(f"{where} holds both float data and double_data")
    pieces = floats or doubles
    if not pieces:
        data = np.zeros(0, np.float32)
    elif len(pieces) == 1:
        data = pieces[0].astype(np.float32)  # a copy: owned, aligned, native byte order
    else:
        data = np.concatenate(pieces).astype(np.float32, copy=False)

    if shape is None and legacy:
        # As Caffe's Blob::FromProto: any legacy dimension makes a 4-D shape, absent ones being 0.
        shape = [legacy.get(k, 0) for k in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH)]
    if shape is None:
        shape = [data.size]
    if any(d < 0 for d in shape):
        raise _DecodeError(f"{where} has a negative dimension in shape {tuple(shape)}")
    count = math.prod(shape)
    if count != data.size:
        raise _DecodeError(f"{where} holds {data.size} values but its shape {tuple(shape)} needs {count}")
    return data.reshape(shape)


def _decode_layer(buf, start: int, end: int, v1: bool, index: int) -> CaffeLayer:
    """Decode a LayerParameter (``v1=False``) or a V1LayerParameter (``v1=True``, possibly wrapping V0)."""
    name_f, type_f, blobs_f = (V1_NAME, V1_TYPE, V1_BLOBS) if v1 else (LAYER_NAME, LAYER_TYPE, LAYER_BLOBS)
    name, type_name = None, None
    blob_spans: list[tuple[int, int]] = []
    v0_span = None
    pos = start
    while pos < end:
        tag_pos = pos
        number, wire, value, vstart, pos = _next_field(buf, pos, end)
        if number == name_f:
            _expect(number, wire, WIRE_BYTES, "layer name", tag_pos)
            name = _string(buf, vstart, pos)
        elif number == type_f:
            if v1:
                _expect(number, wire, WIRE_VARINT, "V1 layer type", tag_pos)
                type_name = V1_LAYER_TYPES.get(value, f"V1LayerType{value}")
            else:
                _expect(number, wire, WIRE_BYTES, "layer type", tag_pos)
                type_name = _string(buf, vstart, pos)
        elif number == blobs_f:
            _expect(number, wire, WIRE_BYTES, "layer blobs", tag_pos)
            blob_spans.append((vstart, pos))
        elif v1 and number == V1_V0_LAYER:
            _expect(number, wire, WIRE_BYTES, "V0 layer", tag_pos)
            v0_span = (vstart, pos)

    if v0_span is not None:  # the oldest files keep name, type and blobs in a nested V0LayerParameter
        pos, v0_end = v0_span
        while pos < v0_end:
            tag_pos = pos
            number, wire, value, vstart, pos = _next_field(buf, pos, v0_end)
            if number == V0_NAME and name is None:
                _expect(number, wire, WIRE_BYTES, "V0 layer name", tag_pos)
                name = _string(buf, vstart, pos)
            elif number == V0_TYPE and type_name is None:
                _expect(number, wire, WIRE_BYTES, "V0 layer type", tag_pos)
                raw = _string(buf, vstart, pos)
                type_name = V0_LAYER_TYPES.get(raw, raw)
            elif number == V0_BLOBS and not blob_spans:
                _expect(number, wire, WIRE_BYTES, "V0 layer blobs", tag_pos)
                blob_spans.append((vstart, pos))

    name = name if name is not None else f"<unnamed layer {index}>"
    blobs = [_decode_blob(buf, s, e, f"layer '{name}' blob {i}") for i, (s, e) in enumerate(blob_spans)]
    return CaffeLayer(name=name, type=type_name or "", blobs=blobs)


def _decode_net(buf, end: int) -> CaffeNet:
    name = ""
    layers: list[CaffeLayer] = []
    pos = 0
    while pos < end:
        tag_pos = pos
        number, wire, value, vstart, pos = _next_field(buf, pos, end)
        if number == NET_NAME:
            _expect(number, wire, WIRE_BYTES, "net name", tag_pos)
            name = _string(buf, vstart, pos)
        elif number in (NET_LAYER, NET_LAYERS_V1):
            _expect(number, wire, WIRE_BYTES, "layer record", tag_pos)
            layers.append(_decode_layer(buf, vstart, pos, v1=number == NET_LAYERS_V1, index=len(layers)))
    return CaffeNet(name=name, layers=layers)


def _looks_like_text(head: bytes) -> bool:
    """True for a prototxt (or any plain text): a binary NetParameter holds tags and lengths below 0x20."""
    printable = set(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
    return len(head) > 0 and all(b in printable for b in head)


def read_caffemodel(path: str | os.PathLike) -> CaffeNet:
    """Decode a binary ``.caffemodel`` (Caffe ``NetParameter``) into its layers and float32 blobs.

    Reads both the current ``layer`` records and the legacy ``layers`` (V1, with a nested V0 record in
    the oldest files), blob shapes given as ``BlobShape`` or as legacy num/channels/height/width, and
    float or double data, packed or not. The file is memory-mapped; blobs are copied out as owned arrays.

    Args:
        path: the ``.caffemodel`` file.

    Returns:
        A :class:`CaffeNet` with every layer in file order (parameter-free layers have no blobs).

    Raises:
        CheckpointError: naming the file, when it is missing, empty, text (a prototxt), HDF5, truncated,
            malformed, holds no layers, or a blob's data does not fill its shape.
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open the caffemodel: {e.strerror}") from e
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CheckpointError(f"{path}: the file is empty, expected a binary caffemodel")
        head = f.read(4096)
        if head.startswith(b"\x89HDF\r\n\x1a\n"):
            raise CheckpointError(f"{path} is an HDF5 (.caffemodel.h5) snapshot; only binary protobuf "
                                  "caffemodels are supported")
        if head.startswith(b"PK\x03\x04"):
            raise CheckpointError(f"{path} is a zip archive (a PyTorch checkpoint?), not a caffemodel")
        if _looks_like_text(head):
            raise CheckpointError(f"{path} is a text file (a .prototxt net definition?), not the binary "
                                  ".caffemodel that holds the weights")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        net = _decode_net(mm, size)
    except _DecodeError as e:
        raise CheckpointError(f"{path}: not a readable caffemodel: {e}") from None
    finally:
        try:
            mm.close()
        except BufferError:  # a view is still referenced (e.g. by a traceback); let GC unmap it
            pass
    if not net.layers:
        raise CheckpointError(f"{path}: no layers found (expected NetParameter 'layer' or 'layers' records); "
                              "is this a caffemodel?")
    return net
