"""Label Studio's ML backend protocol over one model: pre-annotations (brush masks or polygons) for a project's tasks.

Label Studio calls ``GET /health``, ``POST /setup`` (the project and its labelling config) and
``POST /predict`` (``{"tasks": [...], "label_config": XML, "project": "ID.TIMESTAMP", "params": {...}}``),
answered ``{"results": [{"result": [...], "score": s, "model_version": v}, ...]}``, one per task, and
``POST /webhook`` with annotation events (answered, not acted on: training is ``fcnseg train``).
The labelling config decides what comes back: for its first ``BrushLabels`` control, one brush
mask per class in Label Studio's RLE; else for its first ``PolygonLabels``, one polygon per region
(coordinates in percent of the image). A config label matches a model class by its
``predicted_values`` attribute (comma-separated class names), else by name, exactly, else ignoring
case; a config label that matches no class, or a class no label matches, is logged once and gets no
result (nothing is guessed).

Images come from the task's data URL: ``/data/local-files/?d=PATH`` under the local-files root
(``--label-studio-root``, Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``), a local path, or over
http(s) from Label Studio (``/data/upload/...`` relative to ``--label-studio-url``), with its API token.
"""

import io
import logging
import os
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import numpy as np

from fcnseg.annotations.label_studio import local_files_path, prediction_results
from fcnseg.annotations.writing import ExportOptions
from fcnseg.errors import DataError, FcnsegError
from fcnseg.images import read_image

log = logging.getLogger(__name__)

CONTROLS = {"BrushLabels": "mask", "PolygonLabels": "polygon"}
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")
DEFAULT_TIMEOUT = 30.0  # seconds to fetch one image over http(s)


class TaskError(FcnsegError):
    """A task that cannot be pre-annotated: no image in its data, an image that cannot be fetched or read."""


@dataclass(frozen=True)
class Control:
    """A control tag of the labelling config: its type, ``name`` (``from_name``), ``toName`` and label values.

    ``predicted`` maps each label value to the model class names its ``predicted_values`` attribute lists.
    """

    tag: str
    name: str
    to_name: str
    labels: tuple[str, ...]
    predicted: dict[str, tuple[str, ...]]
    value: str | None = None  # the data key of the Image tag it labels (``$image`` -> ``image``)


def parse_label_config(xml: str) -> list[Control]:
    """The BrushLabels and PolygonLabels controls of a labelling config, in document order.

    Raises:
        TaskError: the config is not XML.
    """
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as e:
        raise TaskError(f"the labelling config is not XML ({e})") from e
    images = {element.get("name"): (element.get("value") or "").lstrip("$") for element in root.iter("Image")}
    controls = []
    for element in root.iter():
        if element.tag not in CONTROLS:
            continue
        labels, predicted = [], {}
        for label in element.iter("Label"):
            value = label.get("value")
            if value is None:
                continue
            labels.append(value)
            listed = tuple(v.strip() for v in (label.get("predicted_values") or "").split(",") if v.strip())
            if listed:
                predicted[value] = listed
        to_name = element.get("toName", "")
        controls.append(Control(element.tag, element.get("name", ""), to_name, tuple(labels), predicted,
                                images.get(to_name.split(",")[0])))
    return controls


def match_labels(control: Control, class_names: list[str]) -> tuple[dict[int, str], list[str], list[str]]:
    """Class index -> config label, and the config labels and the classes (background aside) left unmatched.

    A label's ``predicted_values`` first, then its exact name, then its name ignoring case.
    """
    index_of = {name: i for i, name in enumerate(class_names)}
    folded = {name.casefold(): i for i, name in reversed(list(enumerate(class_names)))}
    mapping: dict[int, str] = {}
    unmatched = []
    for label in control.labels:
        wanted = control.predicted.get(label)
        if wanted:
            found = [index_of[n] for n in wanted if n in index_of]
        elif label in index_of:
            found = [index_of[label]]
        elif label.casefold() in folded:
            found = [folded[label.casefold()]]
        else:
            found = []
        if not found:
            unmatched.append(label)
        for i in found:
            mapping.setdefault(i, label)
    missing = [name for i, name in enumerate(class_names) if i > 0 and i not in mapping]
    return mapping, unmatched, missing


class Backend:
    """Pre-annotates Label Studio tasks with ``predictor`` (anything with ``class_names`` and ``predict(image)``).

    Args:
        root: the local-files document root; ``/data/local-files/?d=PATH`` and relative paths are read under it.
        url: Label Studio's address, for image URLs relative to it (``/data/upload/...``).
        token: Label Studio's API token, sent with images fetched from it (default: $LABEL_STUDIO_API_KEY).
        options: polygon simplification and the smallest region.
        model_version: reported to Label Studio with every prediction.
    """

    def __init__(self, predictor, *, root: Path | None = None, url: str | None = None, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, options: ExportOptions | None = None, model_version: str = "fcnseg",
                 max_pixels: int | None = None):
        self.predictor = predictor
        self.class_names = list(predictor.class_names)
        self.root = None if root is None else Path(root)
        self.url = url or os.environ.get("LABEL_STUDIO_URL")
        self.token = token or os.environ.get("LABEL_STUDIO_API_KEY")
        self.timeout = timeout
        self.options = options or ExportOptions()
        self.model_version = model_version
        self.max_pixels = max_pixels
        self._reported: set[tuple[str, str]] = set()

    def _once(self, kind: str, text: str) -> None:
        if (kind, text) not in self._reported:
            self._reported.add((kind, text))
            log.warning("%s", text)

    def control_for(self, label_config: str | None) -> tuple[Control, dict[int, str]]:
        """The control tag results are written for, and class index -> its label.

        Raises:
            TaskError: no config, or one without a BrushLabels or PolygonLabels control.
        """
        if not label_config:
            raise TaskError("the request has no label_config; Label Studio sends the project's labelling config")
        controls = parse_label_config(label_config)
        control = next((c for c in controls if c.tag == "BrushLabels"), None) or next(iter(controls), None)
        if control is None:
            raise TaskError("the labelling config has no BrushLabels or PolygonLabels tag; fcnseg pre-annotates "
                            "semantic segmentation (brush masks or polygons)")
        mapping, unmatched, missing = match_labels(control, self.class_names)
        for label in unmatched:
            self._once("label", f"Label Studio label {label!r} of <{control.tag} name={control.name!r}> is not a class of "
                       f"the model ({', '.join(self.class_names[1:])}); it gets no pre-annotation (add "
                       "predicted_values=\"CLASS\" to the <Label> to map it)")
        for name in missing:
            self._once("class", f"model class {name!r} is not a label of <{control.tag} name={control.name!r}>; "
                       "its pixels get no pre-annotation")
        return control, mapping

    def predict_tasks(self, tasks: list, label_config: str | None) -> list[dict]:
        """One prediction per task (``{"result": [...], "score": ..., "model_version": ...}``); a task whose image
        cannot be read gets an empty result, and the reason is logged."""
        control, mapping = self.control_for(label_config)
        shapes = CONTROLS[control.tag]
        predictions = []
        for task in tasks:
            try:
                image = self.load_image(task, control)
                result = self.predictor.predict(image, probabilities=True)
                labels = np.asarray(result.labels)
                results = prediction_results(labels, self.class_names, shapes=shapes, from_name=control.name,
                                             to_name=control.to_name, options=self.options, names=mapping)
                score = _mean_confidence(result)
            except FcnsegError as e:
                log.warning("task %s: %s", task.get("id", "?") if isinstance(task, dict) else "?", e)
                results, score = [], 0.0
            predictions.append({"result": results, "score": score, "model_version": self.model_version})
        return predictions

    def load_image(self, task, control: Control) -> np.ndarray:
        """The task's image, RGB uint8 ``[H, W, 3]``.

        Raises:
            TaskError: no image URL in the task, a file outside the root or missing, a download that fails.
        """
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise TaskError("the task has no 'data'")
        key = control.value if control.value in data else "image" if "image" in data else None
        reference = data.get(key) if key else None
        if not isinstance(reference, str) or not reference:
            raise TaskError(f"the task's data has no image URL ({key or 'image'!r})")
        parsed = urlparse(reference)
        local = local_files_path(reference)
        if local is not None:
            return self._read_local(unquote(local), reference)
        if parsed.scheme in ("http", "https"):
            return self._download(reference)
        if reference.startswith("/data/"):
            if not self.url:
                raise TaskError(f"{reference} is a Label Studio URL; start fcnseg serve with --label-studio-url "
                                "http://HOST:8080 to fetch it (or use local files storage and --label-studio-root)")
            return self._download(urljoin(self.url.rstrip("/") + "/", reference.lstrip("/")))
        if parsed.scheme not in ("", "file"):
            raise TaskError(f"{reference}: {parsed.scheme}:// URLs are not read; use local files, or http:// or https:// URLs")
        return self._read_local(unquote(parsed.path) if parsed.scheme == "file" else reference, reference)

    def _read_local(self, path_text: str, reference: str) -> np.ndarray:
        path = Path(path_text)
        if self.root is None:
            if not path.is_absolute():
                raise TaskError(f"{reference}: a path relative to Label Studio's local-files root; start fcnseg serve "
                                "with --label-studio-root DIR (LOCAL_FILES_DOCUMENT_ROOT)")
        else:
            root = self.root.resolve()
            path = (root / path).resolve()
            if root != path and root not in path.parents:
                raise TaskError(f"{reference}: lies outside the local-files root {self.root}")
        if not path.is_file():
            raise TaskError(f"{reference}: no such file {path}")
        try:
            return read_image(path, max_pixels=self.max_pixels)
        except DataError as e:
            raise TaskError(f"{reference}: {e}") from e

    def _download(self, url: str) -> np.ndarray:
        request = urllib.request.Request(url)
        if self.token and self.url and url.startswith(self.url.rstrip("/")):
            request.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise TaskError(f"{url}: cannot be downloaded ({e}); check the address, the token (--label-studio-token "
                            "or LABEL_STUDIO_API_KEY) and that this machine reaches it") from e
        try:
            return read_image(io.BytesIO(data), max_pixels=self.max_pixels)
        except DataError as e:
            raise TaskError(f"{url}: {e}") from e


def _mean_confidence(result) -> float:
    """The mean of the top class probability when the prediction carries probabilities, else 1.0."""
    probabilities = getattr(result, "probabilities", None)
    if probabilities is None:
        return 1.0
    return float(np.asarray(probabilities, dtype=np.float32).max(0).mean())


def create_backend_app(backend: Backend):
    """The FastAPI app of the ML backend protocol over ``backend``.

    (This module has no ``from __future__ import annotations``: FastAPI reads the endpoints' ``Request``
    annotation as a class, and it is imported here, where FastAPI is known to be installed.)
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="fcnseg Label Studio ML backend", docs_url=None, redoc_url=None)

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except ValueError:
            data = None
        return data if isinstance(data, dict) else {}

    @app.get("/")
    @app.get("/health")
    def health():
        return {"status": "UP", "model_class": "fcnseg", "model_version": backend.model_version}

    @app.get("/metrics")
    def metrics():
        return {}

    @app.post("/setup")
    async def setup(request: Request):
        data = await body(request)
        schema = data.get("schema")
        if schema:
            try:
                backend.control_for(schema)
            except TaskError as e:
                return JSONResponse({"status": "error", "error": str(e)}, status_code=400)
        return {"model_version": backend.model_version}

    @app.post("/predict")
    async def predict(request: Request):
        data = await body(request)
        tasks = data.get("tasks")
        if not isinstance(tasks, list):
            return JSONResponse({"status": "error", "error": "expected {'tasks': [...], 'label_config': XML}"}, status_code=400)
        try:
            # the forward runs on a worker thread, so that /health answers meanwhile
            from starlette.concurrency import run_in_threadpool

            results = await run_in_threadpool(backend.predict_tasks, tasks, data.get("label_config"))
        except TaskError as e:
            return JSONResponse({"status": "error", "error": str(e)}, status_code=400)
        return {"results": results}

    @app.post("/webhook")
    async def webhook(request: Request):
        data = await body(request)
        event = data.get("action")
        if event not in TRAIN_EVENTS:
            return {"status": "Unknown event"}
        log.info("Label Studio event %s: not acted on (fine-tune with fcnseg train --init-from on an fcnseg import "
                 "of the project's export)", event)
        return JSONResponse({"status": "ok", "result": {"trained": False, "event": event}}, status_code=201)

    return app
