"""One uploaded image to the API's answer: decode as predict does, segment, count class areas, encode the label map as a palette PNG.

Runs on a worker thread of the queue (it is all blocking work); everything stays in memory.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from fcnseg.data.palette import voc_palette
from fcnseg.errors import DataError
from fcnseg.images import read_image
from fcnseg.metrics import class_pixel_counts


@dataclass
class Segmentation:
    """What :func:`segment_upload` produced; ``timings`` in milliseconds."""

    width: int
    height: int
    areas: dict[str, dict]  # class name -> {"pixels": int, "fraction": float}
    labels_png: bytes  # palette PNG of the uint8 [H, W] label map
    image_jpeg: bytes | None  # the upright RGB image as decoded, when asked for
    tiles: int
    precision: str
    timings: dict[str, float] = field(default_factory=dict)
    confidence_png: bytes | None = None  # the confidence map with its scale (RGB PNG), when asked for
    mean_confidence: float | None = None


def class_areas(labels: np.ndarray, class_names: list[str]) -> dict[str, dict]:
    """``{name: {"pixels": n, "fraction": n / (H * W)}}`` for a label map ``[H, W]``, every class listed."""
    counts = class_pixel_counts(labels, len(class_names))
    total = max(int(np.asarray(labels).size), 1)
    return {name: {"pixels": int(n), "fraction": int(n) / total} for name, n in zip(class_names, counts)}


def mask_png_bytes(labels: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """A uint8 label map ``[H, W]`` as palette-PNG bytes, the same file :func:`fcnseg.data.palette.write_mask_png` writes.

    In memory because the server writes nothing to disk; the label map's values are its pixels'
    palette indices, so ``read_mask_png`` (or any PNG reader in palette mode) gives the labels back.
    """
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    image.putpalette((voc_palette(256) if palette is None else palette).astype(np.uint8).flatten().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    """An RGB uint8 image ``[H, W, 3]`` as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def segment_upload(
    predictor,
    data: bytes,
    name: str | None,
    max_pixels: int | None,
    palette: np.ndarray | None = None,
    with_image: bool = False,
    on_tile=None,
    confidence: str | None = None,
) -> Segmentation:
    """Decode ``data`` (any file :func:`fcnseg.images.read_image` reads), segment it with ``predictor``, encode the answer.

    Args:
        predictor: a :class:`~fcnseg.inference.predictor.Predictor` (or anything with its ``predict``,
            ``class_names`` and ``precision``); tiles within its memory budget as ``fcnseg predict`` does.
        name: the upload's file name, used in error messages.
        max_pixels: refuse larger images (``None``: no limit).
        with_image: also return the decoded image (upright, RGB) as JPEG, so that a page shows exactly
            the pixels that were segmented (browsers cannot show TIFF or 16-bit files).
        on_tile: ``on_tile(done, total)`` after each forward (:meth:`Predictor.predict`'s), for a progress report.
        confidence: also return the confidence map of this kind (:mod:`fcnseg.inference.confidence`) as a PNG.
    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels.
        DataError: not an image, truncated or empty.
        FcnsegError: the image does not fit the memory budget even in the smallest tiles.
    """
    start = time.perf_counter()
    source = io.BytesIO(data)
    source.name = name or "upload"  # error messages name the file
    try:
        image = read_image(source, max_pixels)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a decoder plugin tripping over a damaged file (struct.error, IndexError...)
        raise DataError(f"cannot read the image ({type(e).__name__}: {e})", path=source.name) from e
    decoded = time.perf_counter()
    asked = {"on_tile": on_tile} if on_tile is not None else {}
    if confidence is not None:
        asked["confidence"] = confidence
    prediction = predictor.predict(image, **asked)
    predicted = time.perf_counter()
    labels = prediction.labels
    areas = class_areas(labels, list(predictor.class_names))
    labels_png = mask_png_bytes(labels, palette)
    image_jpeg = jpeg_bytes(image) if with_image else None
    confidence_png = mean_confidence = None
    if confidence is not None:
        from fcnseg.inference.confidence import confidence_picture

        buffer = io.BytesIO()
        Image.fromarray(confidence_picture(prediction.confidence, confidence)).save(buffer, format="PNG")
        confidence_png = buffer.getvalue()
        mean_confidence = float(prediction.confidence.astype(np.float64).mean())
    encoded = time.perf_counter()
    return Segmentation(
        width=int(image.shape[1]),
        height=int(image.shape[0]),
        areas=areas,
        labels_png=labels_png,
        image_jpeg=image_jpeg,
        tiles=int(prediction.plan.num_tiles),
        precision=str(prediction.precision),
        timings={
            "decode_ms": (decoded - start) * 1e3,
            "predict_ms": (predicted - decoded) * 1e3,
            "encode_ms": (encoded - predicted) * 1e3,
        },
        confidence_png=confidence_png,
        mean_confidence=mean_confidence,
    )


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
