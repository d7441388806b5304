"""Which layers of an exported FCN stay in float when it is quantized, found in the ONNX graph by their weights'
names, and the graph's input from an image; shared by the ONNX Runtime (:mod:`fcnseg.inference.quantization`) and
OpenVINO NNCF (:mod:`fcnseg.inference.openvino_quantization`) quantizers."""

from __future__ import annotations

import numpy as np

from fcnseg.errors import ConfigError

# Layer groups that may stay in float (``--keep-fp32``), found in the graph by their weights' names.
KEEP_GROUPS = ("first", "score", "head")
SCORE_LAYERS = ("score_fr", "score_pool4", "score_pool3")
# torchvision's FCNHead on a ResNet trunk (fcnseg.models.resnet): classifier.0 the 3x3 convolution, classifier.4
# the 1x1 class scores.
RESNET_SCORE = ("classifier", "4")
RESNET_HEAD = (("classifier", "0"), RESNET_SCORE)
DEFAULT_KEEP_FP32 = ("first", "head")  # measured: the only choice at >= 99.5% agreement (docs/inference.md)


def to_input(image: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> the graph's input, float32 ``[1, 3, H, W]`` in 0..255."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)


def parse_keep_fp32(text: str | None) -> tuple[str, ...]:
    """``"first,score"`` -> ``("first", "score")``; ``"none"`` or ``""`` -> ``()``; unknown names are a ConfigError."""
    if text is None:
        return DEFAULT_KEEP_FP32
    words = tuple(w.strip() for w in text.split(",") if w.strip())
    if words in ((), ("none",)):
        return ()
    unknown = [w for w in words if w not in KEEP_GROUPS]
    if unknown:
        raise ConfigError(f"--keep-fp32: unknown layer group {unknown[0]!r}; expected a comma list of "
                          f"{', '.join(KEEP_GROUPS)}, or none")
    return words


def _layer_of(node, initializers: set[str]) -> tuple[str, ...] | None:
    """The module path of a Conv/ConvTranspose node's layer, from its weight's name: ``("model", "score_fr")``,
    ``("model", "classifier", "4")``; None for other nodes."""
    if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2 or node.input[1] not in initializers:
        return None
    parts = tuple(node.input[1].split("."))  # e.g. "model.backbone.conv1_1.weight" or "model.classifier.4.weight"
    return parts[:-1] if len(parts) >= 2 and parts[-1] == "weight" else parts


def _is_score(layer: tuple[str, ...]) -> bool:
    """A layer that turns features into class scores: score_fr / score_pool4 / score_pool3, or the ResNet FCN's
    ``classifier.4`` (not ``aux_classifier.4``, which an exported graph does not hold anyway)."""
    return layer[-1] in SCORE_LAYERS or layer[-2:] == RESNET_SCORE


def _is_head(layer: tuple[str, ...]) -> bool:
    """A score layer, an upscore* transposed convolution, or the ResNet FCN's whole FCNHead."""
    return _is_score(layer) or layer[-1].startswith("upscore") or layer[-2:] in RESNET_HEAD


def float_nodes(proto, keep: tuple[str, ...]) -> dict[str, list[str]]:
    """Node names of each layer group in ``keep``, in the graph ``proto``.

    first: the first convolution (it sees the normalised pixels); score: score_fr, score_pool4 and
    score_pool3 (a ResNet FCN: ``classifier.4``, its 1x1 scores); head: the score layers and the transposed
    convolutions (upscore*) after them (a ResNet FCN: its FCNHead, ``classifier.0`` and ``classifier.4``).
    """
    initializers = {t.name for t in proto.graph.initializer}
    convs = [(node, _layer_of(node, initializers)) for node in proto.graph.node]
    convs = [(node, layer) for node, layer in convs if layer is not None]
    found: dict[str, list[str]] = {}
    for group in keep:
        if group == "first":
            found[group] = [convs[0][0].name] if convs else []
        elif group == "score":
            found[group] = [n.name for n, layer in convs if _is_score(layer)]
        elif group == "head":
            found[group] = [n.name for n, layer in convs if _is_head(layer)]
    return found
