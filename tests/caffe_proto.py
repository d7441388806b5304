"""An independent Caffe encoder for the tests: the caffe.proto messages built with the protobuf package.

Only the fields a caffemodel's weights need (NetParameter.name/layer, LayerParameter.name/type/blobs,
BlobProto.data/shape, BlobShape.dim), with their caffe.proto numbers, so that fcnseg's own reader is
checked against protobuf's encoding rather than against itself.
"""

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FD = descriptor_pb2.FieldDescriptorProto


def caffe_messages(package: str) -> dict:
    """``{"BlobProto": class, "NetParameter": class}`` in a proto package of their own (one pool per caller)."""
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto2")

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, label, ftype, type_name in fields:
            f = m.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                f.type_name = f".{package}.{type_name}"
            if label == FD.LABEL_REPEATED and ftype in (FD.TYPE_FLOAT, FD.TYPE_INT64):
                f.options.packed = True

    message("BlobShape", [("dim", 1, FD.LABEL_REPEATED, FD.TYPE_INT64, None)])
    message("BlobProto", [("data", 5, FD.LABEL_REPEATED, FD.TYPE_FLOAT, None),
                          ("shape", 7, FD.LABEL_OPTIONAL, FD.TYPE_MESSAGE, "BlobShape")])
    message("LayerParameter", [("name", 1, FD.LABEL_OPTIONAL, FD.TYPE_STRING, None),
                               ("type", 2, FD.LABEL_OPTIONAL, FD.TYPE_STRING, None),
                               ("blobs", 7, FD.LABEL_REPEATED, FD.TYPE_MESSAGE, "BlobProto")])
    message("NetParameter", [("name", 1, FD.LABEL_OPTIONAL, FD.TYPE_STRING, None),
                             ("layer", 100, FD.LABEL_REPEATED, FD.TYPE_MESSAGE, "LayerParameter")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{n}"))
            for n in ("BlobProto", "NetParameter")}


def packed_floats(array: np.ndarray) -> bytes:
    """BlobProto field 5 (data), wire type 2, as protobuf packs a repeated float: tag, varint length, the floats."""
    payload = array.astype("<f4").tobytes()
    n, length = len(payload), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            return bytes([0x2A]) + bytes(length) + payload
