"""An ONNX file that is empty, text or cut short is named so, with its size, before onnx's parser sees it."""

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
import numpy as np  # noqa: E402

from fcnseg.errors import CheckpointError  # noqa: E402
from fcnseg.weights.onnx_format import load_proto, read_info  # noqa: E402


def tiny_onnx_bytes() -> bytes:
    """A one-node graph with a 64 KiB weight and fcnseg-like metadata: big enough to cut in its middle."""
    weight = numpy_helper.from_array(np.ones((16384,), np.float32), name="w")
    node = helper.make_node("Add", ["image", "w"], ["logits"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [16384])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [16384])], [weight])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"fcnseg.arch": "fcn8s"})
    return model.SerializeToString()


def test_the_uncut_file_parses(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(tiny_onnx_bytes())
    assert load_proto(path).metadata_props[0].key == "fcnseg.arch"


@pytest.mark.parametrize("keep", [lambda n: 5000, lambda n: n // 2, lambda n: n - 3])
def test_a_cut_onnx_file_is_called_truncated_with_its_size(tmp_path, keep):
    data = tiny_onnx_bytes()
    size = keep(len(data))
    path = tmp_path / "m.onnx"
    path.write_bytes(data[:size])
    with pytest.raises(CheckpointError, match=rf"m\.onnx: truncated: {size:,} bytes, an ONNX protobuf"):
        read_info(path)


def test_a_text_file_given_as_onnx_is_named_a_text_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_text("input: image\noutput: logits\n")
    with pytest.raises(CheckpointError, match=r"m\.onnx: not an ONNX file \(it starts like a text file"):
        read_info(path)


def test_an_empty_onnx_file_is_named_empty_not_missing_metadata(tmp_path):
    # protobuf parses 0 bytes as an empty model, which then "lacked metadata key 'fcnseg.arch'"
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"m\.onnx: the file is empty \(0 bytes\)"):
        read_info(path)
