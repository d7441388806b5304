"""The web app of `fcnseg serve`: the drop-an-image page, ``POST /api/predict``, ``GET /api/model``, ``GET /healthz``.

:func:`create_app` takes a ready :class:`~fcnseg.inference.predictor.Predictor` and returns a FastAPI
app; every error is answered as JSON ``{"error": "..."}`` with a status that says whose fault it is
(413 too large, 415 not an image upload, 422 unreadable, 503 busy), and none stops the server.
"""

from __future__ import annotations

import logging
import platform
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from fcnseg import __version__
from fcnseg.data.palette import voc_palette
from fcnseg.errors import ConfigError, DataError, FcnsegError
from fcnseg.images import ImageTooLargeError
from fcnseg.serve.limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, DEFAULT_QUEUE, DEFAULT_WORKERS
from fcnseg.serve.queue import QueueFull, WorkQueue
from fcnseg.serve.result import segment_upload, to_base64
from fcnseg.serve.upload import ClientGone, UploadError, receive_upload

log = logging.getLogger(__name__)

STATIC = resources.files("fcnseg.serve") / "static"


# --- the answers, as the OpenAPI description shows them ------------------------------------------


class Area(BaseModel):
    pixels: int = Field(description="pixels predicted as this class")
    fraction: float = Field(description="pixels / (width * height)")


class Timings(BaseModel):
    read_ms: float = Field(description="receiving the upload")
    queue_ms: float = Field(description="waiting for a free worker")
    decode_ms: float = Field(description="decoding the image (EXIF orientation, colour conversions)")
    predict_ms: float = Field(description="the network, tiles included")
    encode_ms: float = Field(description="class areas and the label PNG")
    total_ms: float = Field(description="from the first byte of the body to the answer")


class PredictAnswer(BaseModel):
    name: str | None = Field(description="the upload's file name, where it gave one")
    width: int
    height: int
    classes: list[str] = Field(description="class names; class i has label value i in the PNG")
    areas: dict[str, Area] = Field(description="every class: pixels and fraction of the image")
    labels_png: str = Field(description="base64 palette PNG, width x height, pixel value = class index (VOC colours)")
    image_jpeg: str | None = Field(None, description="base64 JPEG of the image as segmented (upright RGB); only with ?image=true")
    tiles: int = Field(description="forwards the image took (1: whole; more: tiled within --max-memory)")
    precision: str
    runtime: dict
    timings: Timings
    confidence_png: str | None = Field(None, description="base64 PNG of the per-pixel confidence (dark = unsure) with "
                                       "its scale to the right; only with ?confidence=max|margin|entropy")
    mean_confidence: float | None = Field(None, description="the image's mean confidence (0..1); with ?confidence")


class ErrorAnswer(BaseModel):
    error: str


class ProgressAnswer(BaseModel):
    stage: str = Field(description="'waiting' (received, queued or decoding) or 'segmenting' (tiles under way)")
    done: int = Field(description="forwards finished")
    total: int | None = Field(description="forwards the image takes (tiles; every TTA variant's), once known")


MAX_TRACKED = 1000  # progress reports kept at once (each request removes its own when it ends)


ERRORS = {
    413: {"model": ErrorAnswer, "description": "upload over --max-upload-mb, image over --max-pixels or the memory budget"},
    415: {"model": ErrorAnswer, "description": "the body is not an image upload (wrong Content-Type)"},
    422: {"model": ErrorAnswer, "description": "empty, corrupt or not an image"},
    503: {"model": ErrorAnswer, "description": "every worker busy and the queue full; retry"},
}

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image file (JPEG, PNG, TIFF, BMP, WebP, GIF, PPM...), as the raw body or as the "
        "multipart file field `image`. A raw body may name itself with an `X-Filename` header.",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}, "required": ["image"]}
            },
        },
    }
}


# --- the model, described ---------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_runtime(predictor) -> dict:
    """Where and how the forward runs: device, torch version, layout, threads, the processor's name."""
    import torch

    device = getattr(predictor, "device", torch.device("cpu"))
    processor = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": str(device),
        "processor": processor,
        "torch": torch.__version__,
        "layout": "channels_last" if getattr(predictor, "channels_last", False) else "contiguous",
        "threads": torch.get_num_threads(),
    }


def describe_model(predictor, model_name: str, palette: np.ndarray) -> dict:
    config = predictor.config
    return {
        "name": model_name,
        "arch": config.arch,
        "backbone": config.backbone,
        "num_classes": predictor.num_classes,
        "classes": [
            {"index": i, "name": name, "colour": [int(c) for c in palette[i]]} for i, name in enumerate(predictor.class_names)
        ],
        "precision": predictor.precision,
    }


# --- the app ----------------------------------------------------------------------------------


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    predictor,
    *,
    model_name: str = "model",
    workers: int = DEFAULT_WORKERS,
    queue_size: int = DEFAULT_QUEUE,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024**2,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    palette: np.ndarray | None = None,
) -> FastAPI:
    """The FastAPI app serving ``predictor`` (one instance, shared by ``workers`` threads).

    Args:
        predictor: a :class:`~fcnseg.inference.predictor.Predictor`; large images are tiled within its
            ``max_memory`` exactly as ``fcnseg predict`` tiles them.
        model_name: shown on the page and in ``GET /api/model`` (e.g. the checkpoint's file name).
        workers: images segmented at once.
        queue_size: admitted requests that may wait for a worker; beyond, 503.
        max_upload_bytes: the largest request body taken (413 beyond, enforced while reading).
        max_pixels: the largest image taken, in pixels (413 beyond; ``None``: no limit).
        palette: uint8 ``[256, 3]`` class colours (default: the model's, ``predictor.palette``).
    """
    if predictor.num_classes > 256:
        raise ConfigError(f"{model_name}: {predictor.num_classes} classes do not fit a palette PNG (at most 256)")
    if palette is None:
        palette = getattr(predictor, "palette", None)
    palette = voc_palette(256) if palette is None else palette
    queue = WorkQueue(workers, queue_size)
    model_info = describe_model(predictor, model_name, palette)
    runtime = describe_runtime(predictor)
    limits = {
        "max_upload_bytes": max_upload_bytes,
        "max_pixels": max_pixels,
        "workers": workers,
        "queue": queue_size,
        "max_memory": getattr(predictor, "max_memory", None),
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.close(wait=True)  # Ctrl-C: let the running forwards finish, drop the waiting ones

    app = FastAPI(
        title="fcnseg serve",
        description="Semantic segmentation with a Fully Convolutional Network (Long, Shelhamer & Darrell, CVPR 2015).",
        version=__version__,
        lifespan=lifespan,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN; this server sends nothing
        # off the machine, so it offers the OpenAPI description itself (/openapi.json) only.
        docs_url=None,
        redoc_url=None,
    )
    app.state.queue = queue
    progress: dict[str, dict] = {}  # ?progress=ID of requests under way -> their ProgressAnswer

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error(422, f"invalid request: {problems}")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/healthz", summary="liveness and queue state")
    async def healthz():
        return {"status": "ok", "queue": queue.state().to_dict()}

    @app.get("/api/progress/{job}", summary="how far the request sent with ?progress=JOB is", response_model=ProgressAnswer,
             responses={404: {"model": ErrorAnswer, "description": "no request under way with that id"}})
    async def progress_of(job: str):
        if job not in progress:
            return error(404, f"no request under way with progress id {job!r} (finished, or never sent)")
        return progress[job]

    @app.get("/api/model", summary="the model being served, its classes and colours, precision, runtime and limits")
    async def model():
        return {**model_info, "runtime": runtime, "limits": limits}

    @app.post(
        "/api/predict",
        summary="segment one image",
        response_model=PredictAnswer,
        responses=ERRORS,
        openapi_extra=UPLOAD_BODY,
    )
    async def predict(
        request: Request,
        image: bool = Query(False, description="also return the image as segmented (upright RGB JPEG, base64)"),
        confidence: Literal["max", "margin", "entropy"] | None = Query(
            None, description="also return the confidence map of this kind (PNG, base64) and the mean confidence"),
        progress_id: str | None = Query(None, alias="progress", max_length=64,
                                        description="an id of the client's choosing: GET /api/progress/{id} reports "
                                                    "the tiles done while this request runs"),
    ):
        start = time.perf_counter()
        if queue.full():  # refuse before reading a body that could not be served anyway
            return error(503, str(queue.refusal()), {"Retry-After": "1"})
        if progress_id is None or len(progress) >= MAX_TRACKED or progress_id in progress:
            return await segment_request(request, image, None, start, confidence)
        progress[progress_id] = {"stage": "waiting", "done": 0, "total": None}
        try:
            return await segment_request(request, image, progress[progress_id], start, confidence)
        finally:
            progress.pop(progress_id, None)

    async def segment_request(request: Request, image: bool, report: dict | None, start: float,
                              confidence: str | None = None):
        """Read the upload, segment it on the queue (``report`` follows its tiles), answer."""

        def on_tile(done: int, total: int) -> None:  # on a worker thread; one dict update is atomic
            report.update(stage="segmenting", done=done, total=total)

        try:
            upload = await receive_upload(
                request.stream(),
                request.headers.get("content-type"),
                request.headers.get("content-length"),
                request.headers.get("x-filename"),
                max_upload_bytes,
            )
        except UploadError as e:
            return error(e.status, e.message)
        except ClientGone as e:  # one line, not a traceback: a closed browser tab is no server fault
            who = f"{request.client.host}:{request.client.port}" if request.client else "a client"
            name = request.headers.get("x-filename")
            log.warning("%s: %s %s%s: %s", who, request.method, request.url.path, f" ({name})" if name else "", e)
            return error(400, str(e))
        received = time.perf_counter()
        try:
            outcome = await queue.run(segment_upload, predictor, upload.data, upload.name, max_pixels, palette, image,
                                      on_tile if report is not None else None, confidence)
        except QueueFull as e:
            return error(503, str(e), {"Retry-After": "1"})
        except ImageTooLargeError as e:
            return error(413, str(e))
        except DataError as e:
            return error(422, str(e))
        except FcnsegError as e:  # the memory budget cannot hold even the smallest tile
            return error(413, f"{upload.name or 'upload'}: {e}")
        except Exception as e:  # noqa: BLE001 - the model failing on one image must not stop the server
            log.exception("%s: prediction failed", upload.name or "upload")
            return error(500, f"{upload.name or 'upload'}: the server failed to segment the image ({type(e).__name__}: {e})")
        result = outcome.value
        timings = {
            "read_ms": (received - start) * 1e3,
            "queue_ms": outcome.waited * 1e3,
            **result.timings,
            "total_ms": (time.perf_counter() - start) * 1e3,
        }
        log.info("%s: %dx%d in %.0f ms (%d tile%s)", upload.name or "upload", result.width, result.height,
                 timings["total_ms"], result.tiles, "" if result.tiles == 1 else "s")
        return {
            "name": upload.name,
            "width": result.width,
            "height": result.height,
            "classes": list(predictor.class_names),
            "areas": result.areas,
            "labels_png": to_base64(result.labels_png),
            "image_jpeg": to_base64(result.image_jpeg) if result.image_jpeg is not None else None,
            "tiles": result.tiles,
            "precision": result.precision,
            "runtime": runtime,
            "timings": timings,
            **({"confidence_png": to_base64(result.confidence_png), "mean_confidence": result.mean_confidence}
               if result.confidence_png is not None else {}),
        }

    return app
